"""GAN inpainting: masks, latent fitting on a known toy generator, and the CLI around a GAN run."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxvision import checkpoint, config_lib
from jaxvision import data as data_lib
from jaxvision.tasks import gan
from jaxvision.tasks.base import DataInfo
from jaxvision.tools import inpaint
from tests.conftest import REPO

Z_DIM, SHAPE = 8, (8, 8, 1)


def toy_generator():
  """A fixed random linear map z -> pre-activations ~ N(0, 1) per pixel, then tanh."""
  weights = jax.random.normal(jax.random.key(0), (Z_DIM, int(np.prod(SHAPE)))) / np.sqrt(Z_DIM)
  return lambda z: jnp.tanh(z @ weights).reshape(z.shape[0], *SHAPE)


@pytest.mark.parametrize(
  "kind, hidden_fraction", [("center", 0.25), ("left", 0.5), ("random", 0.5)]
)
def test_mask_shapes_and_fractions(kind, hidden_fraction):
  mask = np.asarray(inpaint.make_mask(kind, (3, 28, 28, 3), jax.random.key(0)))
  assert mask.shape == (3, 28, 28, 1) and set(np.unique(mask)) == {0.0, 1.0}
  np.testing.assert_array_equal((1 - mask).mean(axis=(1, 2, 3)), hidden_fraction)
  hole = mask[0, ..., 0] == 0
  if kind == "center":  # the middle 14x14
    assert hole[7:21, 7:21].all() and hole.sum() == 14 * 14
  if kind == "left":
    assert hole[:, :14].all() and not hole[:, 14:].any()
  if kind == "random":
    assert not np.array_equal(mask[0], mask[1])  # each image its own pixels
    again = inpaint.make_mask(kind, (3, 28, 28, 3), jax.random.key(0))
    np.testing.assert_array_equal(mask, again)  # seeded
  with pytest.raises(ValueError, match="unknown mask"):
    inpaint.make_mask("top", (1, 8, 8, 1))


def test_hole_mse_counts_only_the_hole():
  original = jnp.zeros((2, 4, 4, 2))
  mask = inpaint.make_mask("left", original.shape)  # 8 of 16 pixels hidden per image
  repaired = original.at[:, :, :2].set(0.5).at[:, :, 2:].set(100.0)  # visible errors ignored
  assert inpaint.hole_mse(repaired, original, mask) == pytest.approx(0.25)


def test_fitted_latents_recover_a_known_image_in_the_hole():
  generate = toy_generator()
  z_star = jax.random.normal(jax.random.key(1), (16, Z_DIM))
  targets = generate(z_star)  # [16, 8, 8, 1]
  mask = inpaint.make_mask("random", targets.shape, jax.random.key(2))
  repaired, _, z, _ = inpaint.inpaint(
    generate, targets, mask, jax.random.key(3), z_dim=Z_DIM, steps=300, lr=0.05, prior_weight=1e-4
  )
  assert z.shape == (16, Z_DIM)
  np.testing.assert_array_equal(repaired * mask, targets * mask)  # visible pixels kept as they are
  mean_image = jnp.mean(generate(jax.random.normal(jax.random.key(4), (1000, Z_DIM))), axis=0)
  gan_mse = inpaint.hole_mse(repaired, targets, mask)
  mean_mse = inpaint.hole_mse(inpaint.composite(targets, mask, mean_image), targets, mask)
  assert gan_mse < 1e-3 and gan_mse < 0.02 * mean_mse, (gan_mse, mean_mse)


def test_prior_pulls_latents_towards_zero():
  generate = toy_generator()
  targets = generate(jax.random.normal(jax.random.key(1), (4, Z_DIM)))
  nothing_visible = jnp.zeros((4, 8, 8, 1))
  z = inpaint.fit_latents(
    generate, targets, nothing_visible, jax.random.key(3), 200, 0.05, 1.0, z_dim=Z_DIM
  )
  assert float(jnp.abs(z).max()) < 0.05  # with no data the prior's minimum, z = 0


def run_cli(*args):
  return subprocess.run(
    [sys.executable, "-m", "jaxvision.tools.inpaint", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_cli_errors_are_one_line(tmp_path):
  out = run_cli(f"--workdir={tmp_path / 'missing'}", f"--out={tmp_path / 'x.png'}")
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines() == [
    f"inpaint: error: workdir {str(tmp_path / 'missing')!r} does not exist"
  ]
  for flag, message in (
    ("--restarts=0", "--restarts=0 must be >= 1"),
    ("--temperature=-1", "--temperature=-1.0 must be >= 0"),
  ):
    out = run_cli(f"--workdir={tmp_path}", flag)
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [f"inpaint: error: {message}"]
  (tmp_path / "clf").mkdir()
  (tmp_path / "clf" / "config.json").write_text(json.dumps({"trainer": "classifier"}))
  with pytest.raises(ValueError, match="not a GAN run"):
    inpaint.load(str(tmp_path / "clf"))


def tiny_digits_gan_config():
  """A GAN on the 8x8 digits (2x2 -> 4x4 -> 8x8) with networks small enough for tests."""
  config = config_lib.gan_base_config()
  config.data = data_lib.data_config("digits", normalize="symmetric", batch_size=32)
  config.generator.features = (16, 8)
  config.discriminator.features = (8, 16)
  config.z_dim = 16
  config.ema_decay = 0.9
  config.num_train_steps = config.log_every_steps = config.eval_every_steps = 2
  config.checkpoint.every_steps = 2
  config.evaluators.eval.num_samples = config.evaluators.eval.batch_size = 16
  config.evaluators.eval.grid_size = 8  # multiples of the 8 test devices
  return config


def write_gan_workdir(workdir, config, step=7, num_classes=0):
  """What the GAN trainer leaves in a workdir (config.json, a checkpoint of the whole state),
  without training."""
  workdir.mkdir()
  config.conditional = bool(num_classes)
  (workdir / "config.json").write_text(config.to_json_best_effort())
  info = DataInfo((8, 8, 1), {"num_classes": num_classes or 10})
  task = gan.Task(config, info)
  shapes = jax.eval_shape(lambda: task.init_state(jax.random.key(0)))
  # Random weights from numpy: a real init compiles every initializer (slow on a busy CPU).
  rng = np.random.default_rng(0)

  def fill(path, s):
    if getattr(path[-1], "name", getattr(path[-1], "key", None)) == "var":  # positive variances
      return np.ones(s.shape, s.dtype)
    if not np.issubdtype(s.dtype, np.floating):
      return np.zeros(s.shape, s.dtype)
    return (0.3 * rng.normal(size=s.shape)).astype(s.dtype)

  state = jax.tree_util.tree_map_with_path(fill, shapes)
  checkpointer = checkpoint.Checkpointer(str(workdir / "checkpoints"), every_steps=1, keep=1)
  checkpointer.save(step, state, {"step": step, "data_info": info.as_dict()})
  checkpointer.close()


def check_run(gan_run, step, tmp_path):
  assert gan_run.eval_images.shape == (360, 8, 8, 1) and gan_run.z_dim == 16
  assert gan_run.eval_labels.shape == (360,) and gan_run.mean_image.shape == (8, 8, 1)
  dark = lambda x: x[:, 2:6, 2:6].mean((1, 2, 3)) < 0
  classify = lambda x: np.stack([dark(x), ~dark(x)], -1)  # a stand-in: class 0 iff dark centre
  results = inpaint.run(
    gan_run, "center", num=32, steps=20, classify=classify, out=str(tmp_path / "grid.png"), scale=1
  )
  assert results["num_images"] == 32 and results["step"] == step
  for key in ("hole_mse_gan", "visible_mse_gan"):
    assert np.isfinite(results[key]) and results[key] > 0, key
  # the mean image's error in the centre hole (rows and columns 2..5 of 8), computed here
  error = (gan_run.mean_image - gan_run.eval_images[:32])[:, 2:6, 2:6]
  assert results["hole_mse_mean_fill"] == pytest.approx(float(np.mean(error**2)), rel=1e-5)
  images, labels = gan_run.eval_images[:32], gan_run.eval_labels[:32]
  expected = np.mean(np.where(dark(images), labels == 0, labels == 1))
  assert results["accuracy_original"] == pytest.approx(expected)
  assert Image.open(tmp_path / "grid.png").size == (16 * 10 + 2, 3 * 10 + 2)  # 3 rows of 16


def test_run_on_a_gan_workdir(tmp_path):
  write_gan_workdir(tmp_path / "gan", tiny_digits_gan_config())
  check_run(inpaint.load(str(tmp_path / "gan")), 7, tmp_path)
  write_gan_workdir(tmp_path / "cgan", tiny_digits_gan_config(), num_classes=10)
  conditional = inpaint.load(str(tmp_path / "cgan"))
  assert conditional.num_classes == 10
  results = inpaint.run(conditional, "center", num=8, steps=3)
  assert 0.0 <= results["accuracy_gan_class"] <= 1.0 and np.isfinite(results["hole_mse_gan"])


@pytest.mark.parametrize("search_steps", [None, 2])  # every class all along, or refined after 2
def test_conditional_inpainting_keeps_the_best_fitting_class(search_steps):
  def generate(z, labels):  # class c draws a flat image at c / 5 - 1; z changes nothing
    level = labels.astype(jnp.float32) / 5.0 - 1.0 + 0.0 * z[:, 0]
    return jnp.broadcast_to(level[:, None, None, None], (len(labels), 4, 4, 1))

  truth = jnp.array([3, 7, 0])
  images = generate(jnp.zeros((3, 2)), truth)
  mask = inpaint.make_mask("center", images.shape)
  for restarts, keep, temperature in ((1, 1, 0.0), (3, 2, 1.0)):
    repaired, _, z, chosen = inpaint.inpaint_conditional(
      generate,
      images,
      mask,
      jax.random.key(0),
      10,
      z_dim=2,
      steps=5,
      search_steps=search_steps,
      restarts=restarts,
      keep_classes=keep,
      temperature=temperature,
    )
    assert chosen.tolist() == [3, 7, 0] and z.shape == (3, 2)
    np.testing.assert_allclose(repaired, images, atol=1e-6)


def test_fit_weights():
  objectives = jnp.array([[0.2, 1.0], [0.1, 1.0], [0.4, 3.0]])  # 3 fits of 2 images
  np.testing.assert_array_equal(inpaint.fit_weights(objectives, 0.0), [[0, 1], [1, 0], [0, 0]])
  weights = inpaint.fit_weights(objectives, 1.0)
  np.testing.assert_allclose(weights.sum(0), 1.0, rtol=1e-6)
  assert weights[1, 0] > weights[0, 0] > weights[2, 0] > 0  # the better the fit, the more weight
  # exp(-(L - L*) / (T L*)): image 1's fits at L* and 3 L* weigh 1 : 1 : exp(-2)
  np.testing.assert_allclose(weights[:, 1], np.array([1, 1, np.exp(-2)]) / (2 + np.exp(-2)))
  # relative to the best fit: scaling an image's objectives leaves its weights as they are
  np.testing.assert_allclose(inpaint.fit_weights(10 * objectives, 1.0), weights, rtol=1e-5)


def test_weighted_fill_is_the_mean_of_equally_good_completions():
  """Two classes agree on the visible pixels and differ in the hole (+1 or -1): the best fit
  alone guesses one of them, wrong for half the images; weighting both fills the hole with their
  mean, 0, halving the squared error."""

  def generate(z, labels):
    hole = jnp.where(labels == 1, 1.0, -1.0)[:, None, None, None] + 0.0 * z[:, :1, None, None]
    inside = inpaint.make_mask("center", (len(labels), 4, 4, 1)) == 0
    return jnp.where(inside, hole, 0.5)  # [M, 4, 4, 1]

  truth = jnp.array([0, 1, 0, 1])
  images = generate(jnp.zeros((4, 2)), truth)
  mask = inpaint.make_mask("center", images.shape)
  options = dict(z_dim=2, steps=3, prior_weight=0.0)
  sharp = inpaint.inpaint_conditional(generate, images, mask, jax.random.key(0), 2, **options)
  mean = inpaint.inpaint_conditional(
    generate, images, mask, jax.random.key(0), 2, temperature=1.0, restarts=2, **options
  )
  assert inpaint.hole_mse(sharp.repaired, images, mask) == pytest.approx(2.0)  # (+-2)^2, half
  assert inpaint.hole_mse(mean.repaired, images, mask) == pytest.approx(1.0)
  np.testing.assert_allclose(mean.fill * (1 - mask), 0.0, atol=1e-6)


@pytest.mark.slow
def test_run_on_a_trained_digits_gan(tmp_path):
  """The same on a workdir the real trainer wrote (minutes on a busy 2-core machine)."""
  from jaxvision.train import trainer

  trainer.train_and_evaluate(tiny_digits_gan_config(), str(tmp_path / "gan"))
  check_run(inpaint.load(str(tmp_path / "gan")), 2, tmp_path)


def test_the_record_tabulates_like_a_run(tmp_path):
  from jaxvision.tools import report

  write_gan_workdir(tmp_path / "gan", tiny_digits_gan_config())
  gan_run = inpaint.load(str(tmp_path / "gan"))
  classify = lambda x: np.stack([x.mean((1, 2, 3)) < 0, x.mean((1, 2, 3)) >= 0], -1)
  results = inpaint.run(gan_run, "left", num=8, steps=2, classify=classify)
  settings = {"mask": "left", "num": 8, "steps": 2}
  record = inpaint.make_record(str(tmp_path / "gan"), results, settings, "python -m x", 1.5)
  final = record["final"]
  assert final["hole_mse_ratio"] == pytest.approx(
    results["hole_mse_gan"] / results["hole_mse_mean_fill"]
  )
  assert final["accuracy_gain"] == pytest.approx(
    results["accuracy_repaired"] - results["accuracy_mean_fill"]
  )
  # an unfinished GAN run: its config.json, with the settings under `inpaint`
  assert record["config"]["inpaint"] == settings and record["seed"] == 0
  assert record["num_train_steps"] == 2 and "first 8 eval images" in record["dataset"]
  names = [m["name"] for m in report.declared_metrics(record)]
  assert names[0] == "hole_mse_ratio" and "accuracy_gan_class" not in names
  assert set(names) <= set(final)
