"""Object detection (trainer "detection"): a CenterNet-style detector of boxes and classes.

A batch is a scene {"inputs": [B, S, S, C], "boxes": [B, M, 4] (x0, y0, x1, y1) in pixels, x1/y1
exclusive, zero rows for padding, "labels": [B, M] class ids, -1 for padding} (other fields,
e.g. the per-pixel "targets" map, are carried along and unused), or a clip of scenes {"inputs":
[B, T, S, S, C], "boxes": [B, T, M, 4], "labels": [B, M]} (the same objects in every frame), on
which the detector runs per frame: the frames are folded into the batch (`fold_frames`).

Training targets are encoded on device, inside the compiled step, from the padded boxes
(`encode_targets`): per class a heatmap at stride 4 with a Gaussian bump at each object's centre
cell (CenterNet's radius rule), and each object's size and sub-cell offset at its centre cell.
The loss (`detection_losses`) is the penalty-reduced focal loss of the heatmap (CornerNet's,
alpha 2, beta 4) plus `size_weight` x the L1 loss of the sizes and `offset_weight` x that of the
offsets, each normalised by the number of objects in the global batch. Decoding (`decode`) keeps
the heatmap's local maxima (a 3x3 max pool, no NMS) and the `top_k` best of them as boxes.

Config keys read beyond the shared ones: `model` (a `jaxvision.models.centernet` preset),
`optimizer`, `schedule`, `augment.max_shift` (random shift of the scene and its boxes,
`jaxvision.data.augment.shift_scene`), `detection` (top_k, size_weight, offset_weight,
min_overlap), `data` (a source with boxes: "scenes").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxvision import models, optim, parallel
from jaxvision.config_dict import ConfigError
from jaxvision.data import augment
from jaxvision.models import centernet
from jaxvision.tasks import base
from jaxvision.tasks.classification import create_train_state, model_variables
from jaxvision.train.common import TrainState, num_params

SOURCES = ("scenes",)  # data sources with boxes and labels
FRAME_FIELDS = ("inputs", "targets", "boxes")  # a clip's fields with a frame axis


def fold_frames(batch: dict) -> dict:
  """A clip batch ("inputs" [B, T, S, S, C], "boxes" [B, T, M, 4], "targets" [B, T, ...]) as a
  batch of B * T scenes, its per-clip fields ("labels" [B, M], ...) repeated for every frame; a
  scene batch unchanged."""
  if batch["inputs"].ndim != 5:
    return batch
  t = batch["inputs"].shape[1]
  return {
    k: v.reshape(-1, *v.shape[2:]) if k in FRAME_FIELDS else jnp.repeat(v, t, axis=0)
    for k, v in batch.items()
  }


def gaussian_radius(height: jax.Array, width: jax.Array, min_overlap: float = 0.7) -> jax.Array:
  """CenterNet's heatmap radius (`gaussian_radius` of its code, formula as published there):
  the smallest of three radii by which a box of (height, width) cells may be off and still
  overlap the true one by `min_overlap`, truncated to an int32 >= 0."""
  b1 = height + width
  c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
  r1 = (b1 + jnp.sqrt(b1**2 - 4 * c1)) / 2
  b2 = 2 * (height + width)
  c2 = (1 - min_overlap) * width * height
  r2 = (b2 + jnp.sqrt(b2**2 - 16 * c2)) / 2
  a3 = 4 * min_overlap
  b3 = -2 * min_overlap * (height + width)
  c3 = (min_overlap - 1) * width * height
  r3 = (b3 + jnp.sqrt(b3**2 - 4 * a3 * c3)) / 2
  return jnp.maximum(jnp.floor(jnp.minimum(jnp.minimum(r1, r2), r3)), 0).astype(jnp.int32)


def encode_targets(
  boxes: jax.Array,
  labels: jax.Array,
  grid: tuple[int, int],
  num_classes: int,
  stride: int = centernet.STRIDE,
  min_overlap: float = 0.7,
) -> dict:
  """CenterNet's training targets of padded boxes, on device.

  Args:
    boxes: [B, M, 4] (x0, y0, x1, y1) in input pixels, x1/y1 exclusive.
    labels: [B, M] class ids; -1 (or an empty box) marks padding.
    grid: the heads' (height, width) in cells.
    num_classes: heatmap channels.
    stride: input pixels per cell.
    min_overlap: of the Gaussian radius (`gaussian_radius`).

  Returns:
    {"heatmap": [B, h, w, K] in [0, 1], exactly 1 at each object's centre cell; "index": [B, M]
    int32 flat centre cell (y * w + x); "size": [B, M, 2] (w, h) in cells; "offset": [B, M, 2]
    (x, y) of the centre within its cell, in cells; "valid": [B, M] 1.0 for real objects}.
  """
  h, w = grid
  size = (boxes[..., 2:] - boxes[..., :2]) / stride  # [B, M, 2] (w, h) in cells
  valid = (labels >= 0) & jnp.all(size > 0, axis=-1)
  centre = (boxes[..., :2] + boxes[..., 2:]) / (2 * stride)  # [B, M, 2] (x, y) in cells
  cell = jnp.clip(jnp.floor(centre).astype(jnp.int32), 0, jnp.array([w - 1, h - 1]))
  # CenterNet rounds the size up to whole cells for the radius, and draws a (2r+1)-wide bump.
  radius = gaussian_radius(jnp.ceil(size[..., 1]), jnp.ceil(size[..., 0]), min_overlap)
  sigma = (2 * radius + 1) / 6  # [B, M]
  dx = jnp.arange(w)[None, None, None, :] - cell[..., 0, None, None]  # [B, M, 1, w]
  dy = jnp.arange(h)[None, None, :, None] - cell[..., 1, None, None]  # [B, M, h, 1]
  r = radius[..., None, None]
  inside = (jnp.abs(dx) <= r) & (jnp.abs(dy) <= r)
  bumps = jnp.exp(-(dx**2 + dy**2) / (2 * sigma[..., None, None] ** 2))
  bumps = jnp.where(inside & valid[..., None, None], bumps, 0.0)  # [B, M, h, w]
  classes = jax.nn.one_hot(labels, num_classes) * valid[..., None]  # [B, M, K] (-1: zeros)
  heatmap = jnp.max(bumps[..., None] * classes[:, :, None, None, :], axis=1)  # [B, h, w, K]
  return {
    "heatmap": heatmap,
    "index": cell[..., 1] * w + cell[..., 0],
    "size": size,
    "offset": centre - cell,
    "valid": valid.astype(jnp.float32),
  }


def gather_cells(maps: jax.Array, index: jax.Array) -> jax.Array:
  """The values [B, M, C] of maps [B, h, w, C] at flat cells index [B, M]."""
  flat = maps.reshape(maps.shape[0], -1, maps.shape[-1])  # [B, h * w, C]
  return jnp.take_along_axis(flat, index[..., None], axis=1)


def focal_loss(
  logits: jax.Array, heatmap: jax.Array, normalizer, alpha: float = 2.0, beta: float = 4.0
) -> jax.Array:
  """CornerNet's penalty-reduced pixel-wise focal loss, summed and divided by `normalizer`.

  -(1 - p)^alpha log(p) where the target is 1, -(1 - y)^beta p^alpha log(1 - p) elsewhere
  (y the target, p = sigmoid(logits), from log-sigmoids for stability).

  Args:
    logits: heatmap logits [B, h, w, K].
    heatmap: targets [B, h, w, K] in [0, 1], 1 at object centres.
    normalizer: what the sum is divided by (the number of objects).
    alpha, beta: the focusing and the penalty-reduction exponents.
  """
  p = jax.nn.sigmoid(logits)
  positive = heatmap >= 1.0
  pos = (1 - p) ** alpha * jax.nn.log_sigmoid(logits)
  neg = (1 - heatmap) ** beta * p**alpha * jax.nn.log_sigmoid(-logits)
  return -jnp.sum(jnp.where(positive, pos, neg)) / normalizer


def detection_losses(
  outputs: dict,
  targets: dict,
  *,
  size_weight: float = 0.1,
  offset_weight: float = 1.0,
  axis_name: str | None = None,
) -> dict:
  """{"loss", "heatmap_loss", "size_loss", "offset_loss"} of the heads' outputs against
  `encode_targets`, each normalised by the number of objects in the global batch: under pmap by
  the devices' mean count, so that the mean of the devices' gradients is the global one."""
  valid = targets["valid"]  # [B, M]
  count = parallel.psum(jnp.sum(valid), axis_name)
  normalizer = jnp.maximum(count, 1.0) / parallel.psum(1, axis_name)

  def l1(maps, target):  # maps [B, h, w, 2] at the centre cells vs target [B, M, 2]
    error = jnp.abs(gather_cells(maps, targets["index"]) - target)
    return jnp.sum(error * valid[..., None]) / normalizer

  losses = {
    "heatmap_loss": focal_loss(outputs["heatmap"], targets["heatmap"], normalizer),
    "size_loss": l1(outputs["size"], targets["size"]),
    "offset_loss": l1(outputs["offset"], targets["offset"]),
  }
  weighted = size_weight * losses["size_loss"] + offset_weight * losses["offset_loss"]
  losses["loss"] = losses["heatmap_loss"] + weighted
  return losses


def train_step(
  state: TrainState,
  batch: dict,
  key: jax.Array,
  *,
  learning_rate_fn,
  num_classes: int,
  max_shift: int = 0,
  size_weight: float = 0.1,
  offset_weight: float = 1.0,
  min_overlap: float = 0.7,
  axis_name: str | None = None,
):
  """One optimizer step on a batch of scenes (or clips, run per frame).

  Args:
    state: the train state (donated by the caller's compiled step).
    batch: the global batch (under pmap: this device's rows): "inputs", "boxes", "labels" (see
      the module docstring).
    key: the run's base PRNG key; this step's key is `fold_in(key, step)`.
    learning_rate_fn: the schedule, logged as `learning_rate`.
    num_classes: heatmap channels.
    max_shift: random shift of each scene with its boxes (0: none), drawn for the global batch.
    size_weight, offset_weight: of the L1 losses next to the focal loss.
    min_overlap: of the heatmap's Gaussian radius.
    axis_name: the device axis under pmap (gradients, metrics and batch statistics are averaged
      over it, losses normalised by the global number of objects); None under sharded jit.

  Returns:
    (new state, {"train_loss", "train_heatmap_loss", "train_size_loss", "train_offset_loss",
    "learning_rate", "grad_norm"}).
  """
  scenes = fold_frames(batch)  # frames shift independently: each is a scene of its own
  if max_shift:
    key = jax.random.fold_in(key, state.step)
    scenes = augment.shift_scene(key, scenes, max_shift, axis_name=axis_name)
  images = scenes["inputs"]  # [B, S, S, C]
  grid = (images.shape[1] // centernet.STRIDE, images.shape[2] // centernet.STRIDE)
  targets = encode_targets(
    scenes["boxes"], scenes["labels"], grid, num_classes, min_overlap=min_overlap
  )
  mutable = ["batch_stats"] if state.batch_stats else False

  def loss_fn(params):
    out = state.apply_fn(model_variables(state, params), images, train=True, mutable=mutable)
    outputs, updates = out if mutable else (out, {})
    losses = detection_losses(
      outputs,
      targets,
      size_weight=size_weight,
      offset_weight=offset_weight,
      axis_name=axis_name,
    )
    return losses["loss"], (losses, updates)

  (_, (losses, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = parallel.pmean(grads, axis_name)
  new_state = state.apply_gradients(
    grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats)
  )
  step_metrics = {
    **{f"train_{k}": v for k, v in losses.items()},
    "learning_rate": learning_rate_fn(state.step),
    "grad_norm": optax.global_norm(grads),
  }
  return new_state, parallel.pmean(step_metrics, axis_name)


def _per_frame(fn, inputs: jax.Array):
  """`fn` of images [N, S, S, C] applied to inputs [B, S, S, C] or clips [B, T, S, S, C] (frames
  folded into the batch and unfolded from every output: [B, T, ...])."""
  if inputs.ndim != 5:
    return fn(inputs)
  b, t = inputs.shape[:2]
  out = fn(inputs.reshape(b * t, *inputs.shape[2:]))
  return jax.tree.map(lambda x: x.reshape(b, t, *x.shape[1:]), out)


def predict(state: TrainState, batch: dict) -> dict:
  """The heads' raw outputs {"heatmap": logits, "size", "offset"} [B, (T,) h, w, .] of a batch's
  inputs in inference mode (the evaluators' "predict")."""
  apply = lambda images: state.apply_fn(model_variables(state, state.params), images, train=False)
  return _per_frame(apply, batch["inputs"])


def peaks(heat: jax.Array) -> jax.Array:
  """`heat` [B, h, w, K] where it is the maximum of its 3x3 neighbourhood (per class), else 0:
  CenterNet's replacement for non-maximum suppression."""
  neighbourhood = jax.lax.reduce_window(
    heat, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME"
  )
  return jnp.where(heat == neighbourhood, heat, 0.0)


def decode(
  heat: jax.Array, size: jax.Array, offset: jax.Array, top_k: int, stride: int = centernet.STRIDE
) -> dict:
  """The `top_k` strongest heatmap peaks as boxes.

  Args:
    heat: centre probabilities [B, h, w, K].
    size: (w, h) in cells [B, h, w, 2].
    offset: (x, y) of the centre within its cell [B, h, w, 2].
    top_k: detections per image (the best peaks over every class).
    stride: input pixels per cell.

  Returns:
    {"boxes": [B, top_k, 4] (x0, y0, x1, y1) in input pixels, clipped to the image; "scores":
    [B, top_k], best first; "classes": [B, top_k] int32}.
  """
  b, h, w, k = heat.shape
  scores, index = jax.lax.top_k(peaks(heat).reshape(b, -1), top_k)  # [B, top_k]
  cell = index // k
  centre = jnp.stack([cell % w, cell // w], -1) + gather_cells(offset, cell)  # [B, top_k, 2]
  half = gather_cells(size, cell) / 2
  boxes = jnp.concatenate([centre - half, centre + half], -1) * stride
  limit = jnp.array([w, h, w, h]) * stride
  return {
    "boxes": jnp.clip(boxes, 0, limit),
    "scores": scores,
    "classes": (index % k).astype(jnp.int32),
  }


def detect(state: TrainState, batch: dict, *, top_k: int) -> dict:
  """Decoded detections {"boxes": [B, (T,) top_k, 4], "scores", "classes"} of a batch's scenes
  (or clips, per frame) in inference mode (the evaluators' "detect")."""

  def run(images):
    out = state.apply_fn(model_variables(state, state.params), images, train=False)
    return decode(jax.nn.sigmoid(out["heatmap"]), out["size"], out["offset"], top_k)

  return _per_frame(run, batch["inputs"])


def validate(config, strategy) -> None:
  """Checks the keys this family reads; raises ConfigError naming the key and the fix."""
  del strategy
  optim.validate(config.optimizer, "optimizer")
  if config.data.source not in SOURCES:
    raise ConfigError(
      f"config.data.source={config.data.source!r} has no boxes; the detection trainer needs one "
      f"of {SOURCES}"
    )
  try:
    module, attrs = models.model_attrs(config.model)
  except ValueError as e:
    raise ConfigError(f"config.model: {e}") from None
  if module is not centernet.CenterNet:
    raise ConfigError(f"config.model.name={config.model.name!r} is not a CenterNet detector")
  factor = 2 ** len(attrs["features"])
  if config.data.get("size", factor) % factor:
    raise ConfigError(
      f"config.data.size={config.data.size} must be a multiple of {factor} "
      f"(2 ** len(config.model.features))"
    )
  shift = config.augment.max_shift
  if not isinstance(shift, int) or shift < 0:
    raise ConfigError(f"config.augment.max_shift={shift!r} must be an integer >= 0")
  detection = config.detection
  if not isinstance(detection.top_k, int) or detection.top_k < 1:
    raise ConfigError(f"config.detection.top_k={detection.top_k!r} must be a positive integer")
  for name in ("size_weight", "offset_weight"):
    if not detection[name] >= 0:
      raise ConfigError(f"config.detection.{name}={detection[name]} must be >= 0")
  if not 0 < detection.min_overlap < 1:
    raise ConfigError(f"config.detection.min_overlap={detection.min_overlap} must be in (0, 1)")


class Task(base.Task):
  """Detection with a registry CenterNet, one optimizer, focal + L1 losses (see the module)."""

  def __init__(self, config, data: base.DataInfo, axis_name: str | None = None):
    super().__init__(config, data, axis_name)
    self.model = models.create_model(
      config.model, num_classes=data.num_classes, axis_name=axis_name
    )
    self.tx, self.schedule = optim.create_optimizer(
      config.optimizer, config.schedule, config.num_train_steps
    )

  validate = staticmethod(validate)

  def init_state(self, key) -> TrainState:
    frame = self.data.input_shape[self.data.info.get("time_axes", 0) :]  # [S, S, C]
    return create_train_state(self.model, self.tx, jnp.zeros((1, *frame), jnp.float32), key)

  def train_step(self, state, batch, key, *, axis_name=None):
    detection = self.config.detection
    return train_step(
      state,
      batch,
      key,
      learning_rate_fn=self.schedule,
      num_classes=self.data.num_classes,
      max_shift=self.config.augment.max_shift,
      size_weight=detection.size_weight,
      offset_weight=detection.offset_weight,
      min_overlap=detection.min_overlap,
      axis_name=axis_name,
    )

  def with_optimizers(self, state):
    return state.replace(tx=self.tx)

  def predict_fns(self) -> dict:
    top_k = self.config.detection.top_k
    return {"predict": predict, "detect": lambda state, batch: detect(state, batch, top_k=top_k)}

  def summary(self, state) -> str:
    return f"{self.config.model.name}: {num_params(state.params):,} params"

  def results(self, state) -> dict:
    return {"num_params": num_params(state.params), "model": models.describe(self.config.model)}
