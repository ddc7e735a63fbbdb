"""Moving MNIST (Srivastava et al. 2015), generated on the fly from real MNIST digit images.

A clip is `frames` frames of `size` x `size` pixels in which `digits_per_clip` 28x28 digits move
in straight lines at a constant speed and bounce off the walls; where digits overlap the brighter
pixel wins (max). Pixels are float32 in [0, 1]. Every clip is a pure function of (seed, index):
its random choices (which digit images, start positions, velocities) come from
`np.random.default_rng([seed, index])`, and no clip is ever stored, so a data set of any size
costs only the digit images (10,000 x 28 x 28 bytes).

Train clips use digit images [:eval_digits_from] of the digits split and eval clips the rest, so
no eval clip shows a digit image seen in training; the two sources also use different seeds.

Tasks (`task`):
- "predict": `inputs` = the whole clip [T, H, W, 1], `targets` = its last T - `observed` frames
  [T - observed, H, W, 1], i.e. exactly what a predictor must output. A model reads the context
  `inputs[:, :observed]` (observed = T - targets.shape[1]); in training with teacher forcing it
  also reads the true previous frames, which is why `inputs` holds the whole clip.
- "classify": `targets` = a class id [] int32 of the digits' direction of motion, `classes` of
  them, all digits of a clip sharing it (each at its own speed, from its own start). Labels are
  `index % classes`, so any run of consecutive indices is balanced; the angle is jittered by at
  most a quarter of a class's sector, so that neighbouring classes stay apart. `label` says which
  direction:
  - "orientation" (default): the angle of the path to the horizontal, folded into [0, 90]
    degrees (a bounce reflects the direction but keeps this angle), in `classes` (4 or 8) equal
    bins from horizontal to vertical. The signs of the velocity are random, and a uniform start
    with a random sign stays uniform however far it travels and bounces, so *every* single frame
    is independent of the label: only motion tells.
  - "heading": the compass heading at the first frame, counter-clockwise from east (class k is
    k * 360/classes degrees, y up the screen), `classes` 4 or 8. This needs the order of the
    frames, but only the first frame is independent of the label: later ones are not (digits
    heading east crowd towards the east wall early in a clip).
  With `single_frame=True`, `inputs` holds only the first frame [1, H, W, 1] of the same clip: the
  control, in which a model must stay at chance.
"""

from __future__ import annotations

import numpy as np

from jaxvision.data import base, idx

DIGIT = 28  # side of an MNIST digit image
TASKS = ("predict", "classify")
LABELS = ("orientation", "heading")
DIGITS_SOURCES = ("idx", "tfds")

DEFAULTS = dict(
  digits_source="idx",  # idx (IDX files in data_dir) | tfds (TFDS "mnist" prepared in data_dir)
  data_dir="",  # the digits' folder; "": $JAXVISION_MNIST_DIR, else ../shared/data/mnist
  digits_split="t10k",  # IDX prefix ("t10k" | "train"); for tfds "t10k" means TFDS "test"
  eval_digits_from=8000,  # digit images [:N] make train clips, [N:] eval clips (disjoint)
  num_train=10_000,  # clips per epoch (generated, never stored)
  num_eval=1_000,
  seed=0,  # train clips use seed 2 * seed, eval clips 2 * seed + 1
  frames=20,  # T: frames per clip
  observed=10,  # "predict": context frames; targets are the T - observed frames after them
  size=64,  # frame side in pixels
  digits_per_clip=2,
  min_speed=2.0,  # pixels per frame
  max_speed=4.0,
  task="predict",  # predict | classify
  label="orientation",  # "classify": orientation (of the path, in [0, 90] deg) | heading
  classes=4,  # "classify": number of direction classes (4 or 8)
  single_frame=False,  # "classify": inputs are the first frame only (the control)
)
_TFDS_SPLITS = {"t10k": "test"}  # IDX prefix -> TFDS split of the same images


def bounce(start: np.ndarray, velocity: np.ndarray, num_frames: int, limit: float) -> np.ndarray:
  """Positions of points moving at constant velocity inside [0, limit], reflected at the walls.

  Unfolding the reflections, a bouncing coordinate is a triangle wave of the free coordinate, so
  every frame's position has a closed form (no per-frame simulation).

  Args:
    start: start positions [..., 2] in [0, limit].
    velocity: velocities [..., 2] in pixels per frame.
    num_frames: T.
    limit: the largest position (frame side minus digit side).

  Returns:
    Positions [..., T, 2] in [0, limit].
  """
  t = np.arange(num_frames, dtype=np.float64)[:, None]  # [T, 1]
  free = start[..., None, :] + velocity[..., None, :] * t  # [..., T, 2]
  folded = np.mod(free, 2.0 * limit)
  return limit - np.abs(folded - limit)


def render(digits: np.ndarray, positions: np.ndarray, size: int) -> np.ndarray:
  """Draws digits at integer positions, combining overlaps by max.

  Args:
    digits: digit images [D, 28, 28] uint8.
    positions: top-left (x, y) corners [D, T, 2], integers in [0, size - 28].
    size: frame side.

  Returns:
    Frames [T, size, size, 1] float32 in [0, 1].
  """
  num_frames = positions.shape[1]
  canvas = np.zeros((num_frames, size, size), np.uint8)
  for digit, path in zip(digits, positions, strict=True):
    for t, (x, y) in enumerate(path):
      paste(canvas[t], digit, x, y)
  return (canvas.astype(np.float32) / 255.0)[..., None]


def paste(
  canvas: np.ndarray,
  image: np.ndarray,
  x: int,
  y: int,
  *,
  classes: np.ndarray | None = None,
  label: int = 0,
  threshold: int = 0,
) -> None:
  """Draws `image` [h, w] uint8 into `canvas` [H, W] uint8 at top-left (x, y), in place, where
  overlaps keep the brighter pixel (max): how every generated MNIST scene is rendered.

  With `classes` ([H, W] int, in place): the pixels where `image` is drawn on top (brighter than
  what was there) and at least `threshold` bright take `label`, so the class map always names the
  digit the image shows at each pixel (`jaxvision.data.scenes`).
  """
  h, w = image.shape
  window = canvas[y : y + h, x : x + w]
  if classes is not None:
    on_top = (image > window) & (image >= threshold)
    classes[y : y + h, x : x + w][on_top] = label
  np.maximum(window, image, out=window)


class ClipMaker:
  """`make_example(seed, index)` for one split: a pool of digit images and the clip options.

  Attributes:
    digits: the split's digit images [N, 28, 28] uint8.
    first_digit: index of `digits[0]` in the digits split (so `digit_ids` name the split's images).
    Others: as the keys of `DEFAULTS`.
  """

  def __init__(
    self,
    digits: np.ndarray,
    *,
    first_digit: int = 0,
    frames: int = 20,
    observed: int = 10,
    size: int = 64,
    digits_per_clip: int = 2,
    min_speed: float = 2.0,
    max_speed: float = 4.0,
    task: str = "predict",
    label: str = "orientation",
    classes: int = 4,
    single_frame: bool = False,
  ):
    if task not in TASKS:
      raise ValueError(f"unknown moving_mnist task {task!r}; expected one of {TASKS}")
    if task == "predict" and not 1 <= observed < frames:
      raise ValueError(f"need 1 <= observed < frames, got observed={observed}, frames={frames}")
    if task == "predict" and single_frame:
      raise ValueError("single_frame is the control of the classify task; predict needs clips")
    if label not in LABELS:
      raise ValueError(f"unknown moving_mnist label {label!r}; expected one of {LABELS}")
    if classes not in (4, 8):
      raise ValueError(f"classes must be 4 or 8, got {classes}")
    if size < DIGIT + 1:
      raise ValueError(f"size must exceed the digit side {DIGIT}, got {size}")
    if not 0 < min_speed <= max_speed:
      raise ValueError(f"need 0 < min_speed <= max_speed, got {min_speed}, {max_speed}")
    if digits_per_clip < 1 or len(digits) < digits_per_clip:
      raise ValueError(f"cannot draw {digits_per_clip} digits per clip from {len(digits)} images")
    self.digits, self.first_digit = digits.reshape(-1, DIGIT, DIGIT), first_digit
    self.frames, self.observed, self.size = frames, observed, size
    self.digits_per_clip, self.min_speed, self.max_speed = digits_per_clip, min_speed, max_speed
    self.task, self.label, self.classes, self.single_frame = task, label, classes, single_frame

  def sample(self, seed: int, index: int) -> dict:
    """The random choices of clip (seed, index).

    Returns:
      dict with `digit_ids` [D] (indices into the digits split), `positions` [D, T, 2] (integer
      top-left x, y per frame), `velocity` [D, 2] (pixels per frame, y down the screen) and
      `label` (the class for "classify", else -1).
    """
    rng = np.random.default_rng([seed, index])
    d, limit = self.digits_per_clip, self.size - DIGIT
    ids = rng.choice(len(self.digits), d, replace=False)
    start = rng.uniform(0.0, limit, (d, 2))
    speed = rng.uniform(self.min_speed, self.max_speed, d)
    if self.task == "predict":
      label, heading = -1, rng.uniform(0.0, 2.0 * np.pi, d)
    elif self.label == "heading":
      label = index % self.classes
      sector = 2.0 * np.pi / self.classes
      heading = np.full(d, label * sector + rng.uniform(-sector / 4, sector / 4))
    else:
      label = index % self.classes
      sector = 0.5 * np.pi / self.classes
      angle = (label + 0.5) * sector + rng.uniform(-sector / 4, sector / 4)  # in [0, pi/2]
      # Mirror into a random quadrant per digit: the same path angle, a random sign per axis.
      flip_x, flip_y = rng.integers(0, 2, (2, d))
      heading = np.where(flip_x, np.pi - angle, angle) * np.where(flip_y, -1.0, 1.0)
    # Screen rows grow downwards, so a heading measured with y up moves by -sin in y.
    velocity = speed[:, None] * np.stack([np.cos(heading), -np.sin(heading)], -1)  # [D, 2]
    positions = np.rint(bounce(start, velocity, self.frames, limit)).astype(np.int64)
    return dict(
      digit_ids=ids + self.first_digit, positions=positions, velocity=velocity, label=label
    )

  def __call__(self, seed: int, index: int) -> dict[str, np.ndarray]:
    """The example (seed, index): {"inputs", "targets"} as described in the module docstring."""
    spec = self.sample(seed, index)
    clip = render(self.digits[spec["digit_ids"] - self.first_digit], spec["positions"], self.size)
    if self.task == "predict":
      return {"inputs": clip, "targets": clip[self.observed :]}  # [T, H, W, 1], [T - obs, ...]
    inputs = clip[:1] if self.single_frame else clip  # [1 or T, H, W, 1]
    return {"inputs": inputs, "targets": np.asarray(spec["label"], np.int32)}


def read_digits(config, *, with_labels: bool = False):
  """The digit images [N, 28, 28] uint8 of `config.digits_split` from `config.digits_source`
  (and their classes [N] int32 with `with_labels`)."""
  if config.digits_source == "idx":
    images, labels = idx.read_split(config.data_dir or idx.default_mnist_dir(), config.digits_split)
  elif config.digits_source == "tfds":
    from jaxvision.data import tfds  # imported here: tensorflow_datasets is slow to import

    split = _TFDS_SPLITS.get(config.digits_split, config.digits_split)
    images, labels = tfds.read_all("mnist", split, config.data_dir)
  else:
    raise ValueError(
      f"unknown digits_source {config.digits_source!r}; expected one of {DIGITS_SOURCES}"
    )
  images = np.asarray(images, np.uint8).reshape(-1, DIGIT, DIGIT)
  return (images, np.asarray(labels, np.int32)) if with_labels else images


def clip_makers(config, digits: np.ndarray) -> tuple[ClipMaker, ClipMaker]:
  """(train, eval) `ClipMaker`s over disjoint parts of `digits` ([:eval_digits_from] / rest)."""
  split = config.eval_digits_from
  if not 0 < split < len(digits):
    raise ValueError(f"eval_digits_from must lie in (0, {len(digits)}), got {split}")
  options = dict(
    frames=config.frames,
    observed=config.observed,
    size=config.size,
    digits_per_clip=config.digits_per_clip,
    min_speed=float(config.min_speed),
    max_speed=float(config.max_speed),
    task=config.task,
    label=config.label,
    classes=config.classes,
    single_frame=config.single_frame,
  )
  return (
    ClipMaker(digits[:split], first_digit=0, **options),
    ClipMaker(digits[split:], first_digit=split, **options),
  )


def load(config) -> base.Dataset:
  """Generated train and eval sources of `config.num_train` / `config.num_eval` clips."""
  if config.num_train <= 0 or config.num_eval <= 0:
    raise ValueError("moving_mnist needs data.num_train and data.num_eval > 0")
  digits = read_digits(config)
  train, eval_ = clip_makers(config, digits)
  s = config.digits_split
  what = f"{config.digits_per_clip} digit(s), {config.frames} frames of {config.size}x{config.size}"
  if config.task == "predict":
    task, info = f"predict the last {config.frames - config.observed} from {config.observed}", {}
  else:
    view = ", first frame only (control)" if config.single_frame else ""
    task = f"classify {config.label} into {config.classes}{view}"
    info = {"num_classes": config.classes, "time_axes": 1}  # inputs [T, H, W, 1]: no shift in T
  return base.Dataset(
    name="moving_mnist",
    train=base.GeneratedSource(train, config.num_train, seed=2 * config.seed),
    eval=base.GeneratedSource(eval_, config.num_eval, seed=2 * config.seed + 1),
    description=(
      f"moving_mnist ({config.digits_source} {s}[:{config.eval_digits_from}] / "
      f"{s}[{config.eval_digits_from}:] digits) {what}, speed {config.min_speed}-"
      f"{config.max_speed} px/frame; {task}; {config.num_train} / {config.num_eval} clips"
    ),
    info=info,
  )
