"""Sample-quality metrics on a classifier's features: FID, KID, Inception score, class shares.

jaxvision computes them with a jaxvision CNN classifier trained on the same data set, not with
Inception-v3: the numbers are comparable between runs here, NOT to Inception FIDs in papers.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

CAVEAT = (
  "FID/KID/IS on a jaxvision classifier's features: comparable between jaxvision runs, "
  "not to Inception-v3 numbers in papers"
)


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """Fréchet distance between Gaussians fitted to two feature sets [N, D]."""
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  mu_a, mu_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  with np.errstate(all="ignore"):  # (scipy >= 1.16 has no `disp`; a bad result is checked below)
    covmean = linalg.sqrtm(cov_a @ cov_b)
  if not np.isfinite(covmean).all():  # near-singular product: regularise (as in pytorch-fid)
    eps = 1e-6 * np.eye(a.shape[1])
    covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
  covmean = covmean.real
  return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def kid(
  features_a: np.ndarray, features_b: np.ndarray, subset_size: int = 1000, num_subsets: int = 10
) -> float:
  """Kernel Inception Distance: unbiased MMD^2 with the kernel (x.y / d + 1)^3, averaged over
  random subsets (seeded, so the estimate is reproducible)."""
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  m = min(subset_size, len(a), len(b))
  d = a.shape[1]
  rng = np.random.default_rng(0)
  estimates = []
  for _ in range(num_subsets):
    x = a[rng.choice(len(a), m, replace=False)]
    y = b[rng.choice(len(b), m, replace=False)]
    kxx, kyy, kxy = [(p @ q.T / d + 1) ** 3 for p, q in ((x, x), (y, y), (x, y))]
    off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))
    estimates.append(off(kxx) + off(kyy) - 2 * kxy.mean())
  return float(np.mean(estimates))


def inception_score(probs: np.ndarray) -> float:
  """exp(E_x KL(p(y|x) || p(y))) of class probabilities [N, K]: K for confident, balanced
  predictions, 1 when every sample gets the same prediction."""
  p = np.asarray(probs, np.float64)
  marginal = p.mean(0, keepdims=True)
  kl = (p * (np.log(p + 1e-12) - np.log(marginal + 1e-12))).sum(1)
  return float(np.exp(kl.mean()))


def class_shares(probs: np.ndarray) -> np.ndarray:
  """Share of samples whose predicted class is each class [K] (mode coverage)."""
  p = np.asarray(probs)
  return np.bincount(p.argmax(1), minlength=p.shape[1]) / len(p)
