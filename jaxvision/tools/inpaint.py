"""GAN inpainting: fill a hole in an image with the generator's matches to the visible pixels.

  python -m jaxvision.tools.inpaint --workdir=runs/mnist_dcgan_idx --mask=center --num=512 \
    --steps=300 --lr=0.05 [--restarts=2 --temperature=1] [--classifier_workdir=runs/mnist_cnn_idx] \
    [--out=inpaint.png]

For each masked eval image latents z are optimised (Adam, all images at once, the whole
optimisation one jitted `lax.scan`) so that G(z) matches the image on the visible pixels, with a
small Gaussian prior on z; the hole is then filled from G(z) (Yeh et al. 2017, without their
discriminator term). With `--restarts=R` each image gets R latents from different starts, and
with `--temperature` > 0 the fill is their images weighted as a tempered posterior (`fit_weights`)
rather than the best fit alone: the visible pixels rarely settle the digit, and under squared
error an average over the plausible completions beats any one sharp guess. A class-conditional
generator is fitted for every class (all in one batch) for `--search_steps`; then only the
`--keep_classes` best-fitting classes go on for the remaining steps. The class of most weight is
a guess of the digit, whose accuracy is printed too. The PNG shows rows of masked | repaired |
original images. Printed: the MSE inside the hole for the GAN fill and for the mean training
image as fill, and with a classifier run, the classifier's accuracy on masked, mean-filled,
repaired and original images.

The numbers are also written as a results record, `<record_dir>/results.json` (default
`<workdir>/inpaint/mask=<mask>/`, beside the PNG when `--out` is not given): the GAN run's
config and seed with the inpainting settings under `inpaint`, the metrics declared as a run's
are, the command and the machine, so that the report (and a campaign's `Analysis`) tabulates
inpainting like any run, mean +- std over the GAN's seeds.

Masks are 1 on visible pixels and 0 in the hole, [N, H, W, 1] (a hole covers every channel).

Exit status: 0 done, 1 an error (one line).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags, logging

from jaxvision import images as images_lib
from jaxvision import runs
from jaxvision import workdir as workdir_lib
from jaxvision.data import base as data_base

MASKS = ("center", "left", "random")
MASKED_FILL = 0.0  # mid-grey in [-1, 1]: what a masked image shows (and a classifier sees) there
# The record's metrics, declared as evaluators declare theirs (`jaxvision.tools.report`).
METRICS = (
  {"name": "hole_mse_ratio", "label": "hole MSE / mean-fill's", "format": "float",
   "better": "lower"},
  {"name": "hole_mse_gan", "label": "hole MSE", "format": "float", "better": "lower"},
  {"name": "hole_mse_mean_fill", "label": "mean-fill hole MSE", "format": "float"},
  {"name": "accuracy_gain", "label": "repaired - mean-filled accuracy", "format": "percent",
   "better": "higher"},
  {"name": "accuracy_masked", "label": "masked accuracy", "format": "percent"},
  {"name": "accuracy_mean_fill", "label": "mean-filled accuracy", "format": "percent"},
  {"name": "accuracy_repaired", "label": "repaired accuracy", "format": "percent"},
  {"name": "accuracy_original", "label": "original accuracy", "format": "percent"},
  {"name": "accuracy_gan_class", "label": "best-fitting class accuracy", "format": "percent"},
)  # fmt: skip

FLAGS = flags.FLAGS


def make_mask(kind: str, shape, key: jax.Array | None = None) -> jax.Array:
  """A visibility mask: 1 where a pixel is seen, 0 in the hole.

  Args:
    kind: "center" (the central square with half of each side: rows and columns
      [H/4, H/4 + H/2), a quarter of the pixels), "left" (the left half of the columns) or
      "random" (exactly half of each image's pixels, chosen independently per image).
    shape: of the images, (N, H, W, C).
    key: PRNG key; needed by "random" only.

  Returns:
    Mask [N, H, W, 1] float32.
  """
  n, h, w = shape[:3]
  if kind == "center":
    rows = (jnp.arange(h) >= h // 4) & (jnp.arange(h) < h // 4 + h // 2)
    cols = (jnp.arange(w) >= w // 4) & (jnp.arange(w) < w // 4 + w // 2)
    hole = rows[:, None] & cols[None, :]  # [H, W]
  elif kind == "left":
    hole = jnp.broadcast_to(jnp.arange(w) < w // 2, (h, w))
  elif kind == "random":
    if key is None:
      raise ValueError("a random mask needs a key")
    # Ranks of uniform noise: exactly the first half of a random order is hidden.
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(key, (n, h * w)), -1), -1)
    hole = (ranks < h * w // 2).reshape(n, h, w)  # [N, H, W]
  else:
    raise ValueError(f"unknown mask {kind!r}; expected one of {MASKS}")
  return jnp.broadcast_to(~hole, (n, h, w)).astype(jnp.float32)[..., None]  # [N, H, W, 1]


def objective(
  generated: jax.Array, images: jax.Array, mask: jax.Array, z: jax.Array, prior_weight: float
) -> jax.Array:
  """Per image: the mean squared error over its visible pixels plus the prior on its latent.

  Args:
    generated: G(z) [N, H, W, C].
    images: targets [N, H, W, C].
    mask: [N, H, W, 1], 1 on visible pixels.
    z: latents [N, z_dim].
    prior_weight: weight of `||z||^2 / z_dim`.

  Returns:
    [N].
  """
  visible = jnp.maximum(jnp.sum(mask, axis=(1, 2, 3)) * images.shape[-1], 1.0)  # [N]
  squared = jnp.sum(jnp.square(generated - images) * mask, axis=(1, 2, 3))  # [N]
  return squared / visible + prior_weight * jnp.mean(jnp.square(z), axis=-1)


def fit_weights(objectives: jax.Array, temperature: float) -> jax.Array:
  """How much each fit of an image counts in its fill: a tempered posterior over the fits.

  A fit with objective L gets weight exp(-(L - L*) / (temperature * L*)), L* the image's best
  objective: the best fit's residual stands for the noise level, so one temperature suits images
  (and masks) whose residuals differ in scale. The weighted mean of the fits' images is then the
  fill: under squared error the posterior mean beats any single sharp guess when the visible
  pixels leave the digit open. Temperature 0 keeps only the best fit (Yeh et al. 2017).

  Args:
    objectives: [F, N], F fits of each of N images (`objective`).
    temperature: > 0 as above; 0: all weight on the best fit.

  Returns:
    Weights [F, N], each column summing to 1.
  """
  best = jnp.min(objectives, axis=0)  # [N]
  if temperature <= 0:
    return jax.nn.one_hot(jnp.argmin(objectives, axis=0), objectives.shape[0], axis=0)
  scale = temperature * jnp.maximum(best, 1e-12)
  return jax.nn.softmax(-(objectives - best) / scale, axis=0)


def fit_latents(
  generate_fn: Callable[[jax.Array], jax.Array],
  images: jax.Array,
  mask: jax.Array,
  key: jax.Array,
  steps: int = 300,
  lr: float = 0.05,
  prior_weight: float = 1e-3,
  *,
  z_dim: int,
  z0: jax.Array | None = None,
) -> jax.Array:
  """Latents whose generated images match `images` on the visible pixels.

  Minimises, for each image independently, its `objective`: the mean squared error over its
  visible pixels plus `prior_weight * ||z||^2 / z_dim` (the prior keeps z near the Gaussian
  shell the generator was trained on; per-dimension so one weight suits any z_dim). Adam runs
  `steps` steps on the sum over images (each z sees only its own image's gradient) in one jitted
  scan.

  Args:
    generate_fn: latents [N, z_dim] -> images [N, H, W, C] (jax-traceable, e.g. a jitted apply).
    images: targets [N, H, W, C] in the generator's range.
    mask: [N, H, W, 1] (or broadcastable), 1 on visible pixels.
    key: PRNG key of the initial latents (standard normal), unless `z0` gives them.
    steps: Adam steps.
    lr: Adam learning rate.
    prior_weight: weight of the prior term.
    z_dim: latent size.
    z0: initial latents [N, z_dim] (e.g. to continue a fit); None: drawn from `key`.

  Returns:
    Latents [N, z_dim].
  """
  images = jnp.asarray(images, jnp.float32)
  mask = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), images.shape[:3] + (1,))
  tx = optax.adam(lr)

  @jax.jit
  def optimise(z, images, mask):
    def total(z):
      return jnp.sum(objective(generate_fn(z), images, mask, z, prior_weight))

    def step(carry, _):
      z, opt_state = carry
      updates, opt_state = tx.update(jax.grad(total)(z), opt_state, z)
      return (optax.apply_updates(z, updates), opt_state), None

    (z, _), _ = jax.lax.scan(step, (z, tx.init(z)), None, length=steps)
    return z

  if z0 is None:
    z0 = jax.random.normal(key, (images.shape[0], z_dim))
  return optimise(z0, images, mask)


def composite(images: jax.Array, mask: jax.Array, fill) -> jax.Array:
  """Visible pixels from `images`, the hole from `fill` (images [N, H, W, C] or a constant)."""
  return mask * images + (1.0 - mask) * fill


def hole_mse(repaired: jax.Array, original: jax.Array, mask: jax.Array) -> float:
  """Mean squared error over the hole's pixels (and channels) of all images.

  Args:
    repaired: images [N, H, W, C].
    original: images [N, H, W, C].
    mask: [N, H, W, 1], 1 on visible pixels.

  Returns:
    The MSE inside the hole (0 if there is none).
  """
  hole = jnp.broadcast_to(1.0 - jnp.asarray(mask, jnp.float32), jnp.shape(original))
  err = jnp.sum(jnp.square(jnp.asarray(repaired) - jnp.asarray(original)) * hole)
  return float(err / jnp.maximum(jnp.sum(hole), 1.0))


class GanRun(NamedTuple):
  """What inpainting needs from a GAN workdir."""

  # latents [N, z_dim] (and, conditional, class ids [N]) -> images [N, H, W, C]
  generate: Callable[..., jax.Array]
  z_dim: int
  step: int
  eval_images: np.ndarray  # [N, H, W, C] in [-1, 1]
  eval_labels: np.ndarray  # [N]
  mean_image: np.ndarray  # [H, W, C], the mean train image: the baseline fill
  num_classes: int = 0  # > 0: a class-conditional generator


def load(workdir: str, use_ema: bool = True) -> GanRun:
  """The generator, eval images and mean train image of a GAN workdir.

  Args:
    workdir: a GAN run's workdir (a checkpoint and its config.json).
    use_ema: use the generator's EMA weights when the run kept them.

  Returns:
    A `GanRun`.

  Raises:
    FileNotFoundError or ValueError, with a one-line message, for a workdir that is missing,
    has no checkpoint, is not a GAN run or is not on [-1, 1] data.
  """
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"workdir {workdir!r} does not exist")
  trainer = workdir_lib.load_config(workdir).get("trainer")
  if trainer != "gan":
    raise ValueError(f"{workdir} is a {trainer!r} run, not a GAN run")
  gan = runs.load_run(workdir)
  config = gan.config
  if config.data.normalize != "symmetric":
    raise ValueError(f"{workdir} trained on data.normalize={config.data.normalize!r}, not [-1, 1]")
  bound = gan.apply("generate" if use_ema else "generate_raw")
  num_classes = gan.task.num_classes
  if num_classes:
    generate = jax.jit(lambda z, labels: bound({"z": z, "labels": labels}))
  else:
    generate = jax.jit(lambda z: bound({"z": z}))
  dataset = gan.dataset()
  mean_image = data_base.source_mean(dataset.train)  # [H, W, C]
  eval_ = dataset.eval.get(np.arange(len(dataset.eval)))
  return GanRun(
    generate,
    config.z_dim,
    gan.step,
    eval_["inputs"],
    eval_["targets"],
    mean_image,
    num_classes,
  )


class Inpainting(NamedTuple):
  """What an inpainting gives back."""

  repaired: jax.Array  # [N, H, W, C]: the visible pixels as they were, the hole from `fill`
  fill: jax.Array  # [N, H, W, C]: the fits' images, weighted (`fit_weights`)
  latents: jax.Array  # [N, z_dim]: each image's best fit
  classes: jax.Array  # [N]: a conditional generator's class of most weight (0 otherwise)


def inpaint_conditional(
  generate_fn: Callable[[jax.Array, jax.Array], jax.Array],
  images: jax.Array,
  mask: jax.Array,
  key: jax.Array,
  num_classes: int,
  *,
  z_dim: int,
  steps: int = 300,
  lr: float = 0.05,
  prior_weight: float = 1e-3,
  restarts: int = 1,
  temperature: float = 0.0,
  search_steps: int | None = None,
  keep_classes: int = 1,
) -> Inpainting:
  """Repairs the holes of `images` with a class-conditional generator.

  Every image gets `num_classes x restarts` latents (one batch), fitted for `search_steps`
  steps. With `search_steps` < `steps`, only the `keep_classes` classes whose best fit is best
  go on, each with its `restarts` latents, for the remaining steps (fewer fits for those). The
  fill is the fits' images weighted by `fit_weights` (temperature 0: the best fit alone), and the
  class of most weight is the guess of the digit.

  Args:
    generate_fn: (latents [M, z_dim], class ids [M]) -> images [M, H, W, C] (jax-traceable).
    images: [N, H, W, C] in the generator's range.
    mask: [N, H, W, 1], 1 on visible pixels.
    key: PRNG key of the initial latents.
    num_classes: the generator's classes (1 for an unconditional one, see `inpaint`).
    z_dim, steps, lr, prior_weight: as in `fit_latents`.
    restarts: latents per image and class, from different random starts.
    temperature: of `fit_weights`.
    search_steps: steps over every class before only `keep_classes` go on; None: `steps`.
    keep_classes: classes refined after the search.

  Returns:
    An `Inpainting`.
  """
  images = jnp.asarray(images, jnp.float32)
  mask = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), images.shape[:3] + (1,))
  n, r = images.shape[0], restarts
  search = steps if search_steps is None else max(1, min(search_steps, steps))
  options = dict(lr=lr, prior_weight=prior_weight, z_dim=z_dim)

  def fit(labels, fit_steps, z0=None):  # labels [F, N]: each image's F fits, fitted in one batch
    f = labels.shape[0]
    flat = labels.reshape(-1)  # [F * N]
    tiled, tiled_mask = jnp.tile(images, (f, 1, 1, 1)), jnp.tile(mask, (f, 1, 1, 1))
    z0 = None if z0 is None else z0.reshape(f * n, z_dim)
    generate = lambda z: generate_fn(z, flat)
    z = fit_latents(generate, tiled, tiled_mask, key, steps=fit_steps, z0=z0, **options)
    generated = generate(z)
    objectives = objective(generated, tiled, tiled_mask, z, prior_weight)
    return z.reshape(f, n, z_dim), generated.reshape(f, *images.shape), objectives.reshape(f, n)

  # Fit f = class * restarts + restart.
  labels = jnp.broadcast_to(jnp.repeat(jnp.arange(num_classes), r)[:, None], (num_classes * r, n))
  z, generated, objectives = fit(labels, search)
  if steps > search:
    keep = max(1, min(keep_classes, num_classes))
    best_of_class = objectives.reshape(num_classes, r, n).min(axis=1)  # [K, N]
    kept = jnp.argsort(best_of_class, axis=0)[:keep]  # [M, N]
    rows = (kept[:, None, :] * r + jnp.arange(r)[None, :, None]).reshape(keep * r, n)
    z0 = jnp.take_along_axis(z, rows[..., None], axis=0)  # [M * R, N, z_dim]
    labels = jnp.repeat(kept, r, axis=0)  # [M * R, N]
    z, generated, objectives = fit(labels, steps - search, z0)
  weights = fit_weights(objectives, temperature)  # [F, N]
  fill = jnp.einsum("fn,fnhwc->nhwc", weights, generated)
  best = jnp.argmin(objectives, axis=0)  # [N]
  class_weight = jnp.einsum("fn,fnk->nk", weights, jax.nn.one_hot(labels, num_classes))
  return Inpainting(
    composite(images, mask, fill),
    fill,
    z[best, jnp.arange(n)],
    jnp.argmax(class_weight, axis=-1),
  )


def inpaint(
  generate_fn: Callable[[jax.Array], jax.Array],
  images: jax.Array,
  mask: jax.Array,
  key: jax.Array,
  **options,
) -> Inpainting:
  """`inpaint_conditional` with an unconditional generator (latents [N, z_dim] -> images): one
  class; `options` as there (`search_steps` and `keep_classes` change nothing)."""
  return inpaint_conditional(lambda z, labels: generate_fn(z), images, mask, key, 1, **options)


def run(
  gan_run: GanRun,
  mask_kind: str,
  *,
  num: int = 512,
  steps: int = 300,
  lr: float = 0.05,
  prior_weight: float = 1e-3,
  seed: int = 0,
  restarts: int = 1,
  temperature: float = 0.0,
  search_steps: int | None = None,
  keep_classes: int = 1,
  classify: Callable[[np.ndarray], np.ndarray] | None = None,
  out: str | None = None,
  show: int = 16,
  scale: int = 2,
) -> dict:
  """Inpaints the first `num` eval images of a GAN run; writes the PNG; returns the metrics.

  Args:
    gan_run: from `load`.
    mask_kind: one of `MASKS`.
    num: eval images to repair.
    steps, lr, prior_weight: of the latent optimisation (`fit_latents`).
    seed: of the random mask and the initial latents.
    restarts, temperature: latents per image (and class) and how their fits are weighted in the
      fill (`inpaint_conditional`, `fit_weights`).
    search_steps, keep_classes: a conditional generator's steps over every class before only
      the `keep_classes` best-fitting classes go on (`inpaint_conditional`); None: all steps
      over every class.
    classify: images [N, H, W, C] in [-1, 1] -> class probabilities [N, K], for accuracies.
    out: PNG path for rows of masked | repaired | original images (the first `show`), or None.
    show: images per row of the PNG.
    scale: pixel upscaling of the PNG.

  Returns:
    {"step", "num_images", "hole_mse_gan", "hole_mse_mean_fill", "visible_mse_gan"}, for a
    conditional generator "accuracy_gan_class" (the class of most weight against the label) and,
    with `classify`, "accuracy_masked", "accuracy_mean_fill", "accuracy_repaired",
    "accuracy_original".
  """
  original = jnp.asarray(gan_run.eval_images[:num], jnp.float32)  # [N, H, W, C]
  labels = gan_run.eval_labels[:num]
  mask_key, z_key = jax.random.split(jax.random.key(seed))
  mask = make_mask(mask_kind, original.shape, mask_key)  # [N, H, W, 1]
  options = dict(
    z_dim=gan_run.z_dim,
    steps=steps,
    lr=lr,
    prior_weight=prior_weight,
    restarts=restarts,
    temperature=temperature,
  )
  if gan_run.num_classes:
    options.update(search_steps=search_steps, keep_classes=keep_classes)
    done = inpaint_conditional(
      gan_run.generate, original, mask, z_key, gan_run.num_classes, **options
    )
  else:
    done = inpaint(gan_run.generate, original, mask, z_key, **options)
  repaired = done.repaired
  masked = composite(original, mask, MASKED_FILL)
  mean_filled = composite(original, mask, jnp.asarray(gan_run.mean_image))
  results = {
    "step": gan_run.step,
    "num_images": int(original.shape[0]),
    "hole_mse_gan": hole_mse(repaired, original, mask),
    "hole_mse_mean_fill": hole_mse(mean_filled, original, mask),
    # How well the fill matches what it was fitted to: a large value means the inversion failed.
    "visible_mse_gan": hole_mse(done.fill, original, 1.0 - mask),
  }
  if gan_run.num_classes:  # the conditional fit's guess of each digit
    results["accuracy_gan_class"] = float(np.mean(np.asarray(done.classes) == labels))
  if classify is not None:
    for name, batch in (
      ("masked", masked),
      ("mean_fill", mean_filled),
      ("repaired", repaired),
      ("original", original),
    ):
      probs = classify(np.asarray(batch))
      results[f"accuracy_{name}"] = float(np.mean(np.argmax(probs, -1) == labels))
  if out:
    k = min(show, int(original.shape[0]))
    rows = np.concatenate([np.asarray(masked[:k]), np.asarray(repaired[:k]), original[:k]])
    images_lib.save_grid(rows, out, cols=k, scale=scale)
  return results


def record_dir(workdir: str, mask_kind: str) -> str:
  """Where an inpainting of the run in `workdir` keeps its record and PNG by default."""
  return os.path.join(workdir, "inpaint", f"mask={mask_kind}")


def make_record(workdir: str, results: dict, settings: dict, command: str, wall_time_s: float):
  """A results record of an inpainting (`jaxvision.tools.record`).

  Args:
    workdir: the GAN run's workdir.
    results: from `run`.
    settings: how it inpainted ({"mask", "num", "steps", "lr", "prior_weight", "seed", "ema",
      "classifier_workdir"}): recorded under `config.inpaint`.
    command: the command line that ran it.
    wall_time_s: how long it took.

  Returns:
    The record: the GAN run's config with `inpaint` added, `final` (the results, the hole MSE
    ratio to mean-fill's and the repaired accuracy's gain over mean-filled), the declared
    `METRICS`, this machine and commit.
  """
  from jaxvision.tools import record

  final = dict(results)
  if results["hole_mse_mean_fill"] > 0:
    final["hole_mse_ratio"] = results["hole_mse_gan"] / results["hole_mse_mean_fill"]
  if "accuracy_repaired" in results:
    final["accuracy_gain"] = results["accuracy_repaired"] - results["accuracy_mean_fill"]
  made = record.make(workdir, "inpaint", settings, final, METRICS, command, wall_time_s)
  made["dataset"] = f"{made['dataset']}; its first {results['num_images']:,} eval images"
  return made


def _define_flags():
  """The command line's flags (defined only when run as a program, not on import)."""
  flags.DEFINE_string("workdir", None, "A GAN run's workdir.")
  flags.DEFINE_enum("mask", "center", MASKS, "The hole: centre square, left half, random pixels.")
  flags.DEFINE_integer("num", 512, "Eval images to repair (the first ones of the eval split).")
  flags.DEFINE_integer("steps", 300, "Adam steps on the latents.")
  flags.DEFINE_float("lr", 0.05, "Adam learning rate on the latents.")
  flags.DEFINE_float("prior_weight", 1e-3, "Weight of the prior term ||z||^2 / z_dim.")
  flags.DEFINE_string(
    "out", None, "Output PNG: rows of masked | repaired | original images (default: in record_dir)."
  )
  flags.DEFINE_string(
    "record_dir", None, "Folder of results.json (default: <workdir>/inpaint/mask=<mask>)."
  )
  flags.DEFINE_string("classifier_workdir", None, "A classifier run: accuracies on the images.")
  flags.DEFINE_integer("seed", 0, "Seed of the initial latents and of the random mask.")
  flags.DEFINE_integer("restarts", 1, "Latents per image (and class), from different starts.")
  flags.DEFINE_float(
    "temperature",
    0.0,
    "Weight of the fits in the fill: exp(-(L - L*) / (temperature L*)); 0: the best fit alone.",
  )
  flags.DEFINE_integer(
    "keep_classes", 1, "A conditional generator: classes refined after the search steps."
  )
  flags.DEFINE_integer(
    "search_steps",
    60,
    "A conditional generator: steps fitting every class before the best one alone is refined.",
  )
  flags.DEFINE_bool("ema", True, "Use the generator's EMA weights when the run has them.")
  flags.DEFINE_integer("show", 16, "Images (columns) in the PNG.")
  flags.DEFINE_integer("scale", 2, "Pixel upscaling of the PNG.")


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  for name, low in (("num", 1), ("steps", 1), ("restarts", 1), ("keep_classes", 1)):
    if FLAGS[name].value < low:
      sys.exit(f"inpaint: error: --{name}={FLAGS[name].value} must be >= {low}")
  if FLAGS.temperature < 0:
    sys.exit(f"inpaint: error: --temperature={FLAGS.temperature} must be >= 0")
  try:
    gan_run = load(FLAGS.workdir, FLAGS.ema)
    classify = None
    if FLAGS.classifier_workdir:
      from jaxvision.evaluators.features import ClassifierFeatures

      classifier = ClassifierFeatures(FLAGS.classifier_workdir)
      classify = lambda x: classifier(x)[1]
  except (FileNotFoundError, ValueError) as e:
    # A wrong workdir is a usage error: one line, no traceback.
    sys.exit(f"inpaint: error: {e}")
  start = time.perf_counter()
  directory = FLAGS.record_dir or record_dir(FLAGS.workdir, FLAGS.mask)
  out = FLAGS.out or os.path.join(directory, "grid.png")
  os.makedirs(directory, exist_ok=True)
  if os.path.dirname(out):
    os.makedirs(os.path.dirname(out), exist_ok=True)
  results = run(
    gan_run,
    FLAGS.mask,
    num=FLAGS.num,
    steps=FLAGS.steps,
    lr=FLAGS.lr,
    prior_weight=FLAGS.prior_weight,
    seed=FLAGS.seed,
    restarts=FLAGS.restarts,
    temperature=FLAGS.temperature,
    search_steps=FLAGS.search_steps,
    keep_classes=FLAGS.keep_classes,
    classify=classify,
    out=out,
    show=FLAGS.show,
    scale=FLAGS.scale,
  )
  settings = {
    name: FLAGS[name].value
    for name in (
      "mask",
      "num",
      "steps",
      "search_steps",
      "keep_classes",
      "restarts",
      "temperature",
      "lr",
      "prior_weight",
      "seed",
      "ema",
      "classifier_workdir",
    )  # fmt: skip
  }
  from jaxvision.tools import record as record_lib

  command = record_lib.command_line("inpaint")
  record = make_record(FLAGS.workdir, results, settings, command, time.perf_counter() - start)
  path = record_lib.write(directory, record)
  print(
    f"Inpainted {results['num_images']} eval images ({FLAGS.mask} mask) with {FLAGS.workdir} "
    f"(step {results['step']}); wrote {out} and {path}"
  )
  ratio = record["final"].get("hole_mse_ratio", float("nan"))
  print(
    f"MSE in the hole: GAN {results['hole_mse_gan']:.4f} vs mean-image fill "
    f"{results['hole_mse_mean_fill']:.4f} (ratio {ratio:.3f}); fit on visible pixels: "
    f"{results['visible_mse_gan']:.4f}"
  )
  if "accuracy_gan_class" in results:
    accuracy = results["accuracy_gan_class"]
    print(f"Class of most weight in the conditional generator's fits: accuracy {accuracy:.3f}")
  if "accuracy_original" in results:
    names = ("masked", "mean_fill", "repaired", "original")
    accuracies = ", ".join(f"{n} {results[f'accuracy_{n}']:.3f}" for n in names)
    print(f"Classifier accuracy: {accuracies}")


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
