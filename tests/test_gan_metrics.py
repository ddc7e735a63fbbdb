"""FID, KID, Inception score and class shares behave as their definitions say."""

import numpy as np

from jaxvision.evaluators import gan_metrics


def _features(n=2000, d=16, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 3.0


def test_fid_is_zero_on_itself_and_grows_with_perturbation():
  a = _features()
  assert abs(gan_metrics.fid(a, a)) < 1e-6
  rng = np.random.default_rng(1)
  scores = [gan_metrics.fid(a, a + s * rng.normal(size=a.shape) + s) for s in (0.1, 0.5, 2.0)]
  assert 0 < scores[0] < scores[1] < scores[2]


def test_kid_is_near_zero_for_same_distribution_and_grows():
  a, b = _features(seed=0), _features(seed=0)[::-1].copy()
  same = gan_metrics.kid(a, b)
  shifted = gan_metrics.kid(a, b + 1.0)
  far = gan_metrics.kid(a, b + 3.0)
  assert abs(same) < 0.05 * shifted and 0 < shifted < far


def test_inception_score_extremes():
  confident_uniform = np.eye(10)[np.arange(10_000) % 10] * 0.999 + 0.0001
  assert abs(gan_metrics.inception_score(confident_uniform) - 10.0) < 0.1
  single_class = np.tile(np.eye(10)[3], (10_000, 1))
  assert abs(gan_metrics.inception_score(single_class) - 1.0) < 1e-3
  unsure = np.full((1000, 10), 0.1)
  assert abs(gan_metrics.inception_score(unsure) - 1.0) < 1e-3


def test_class_shares():
  probs = np.eye(4)[[0, 0, 1, 3]]
  np.testing.assert_allclose(gan_metrics.class_shares(probs), [0.5, 0.25, 0.0, 0.25])
