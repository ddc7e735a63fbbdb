"""Multi-digit scenes for detection and segmentation, generated on the fly from real MNIST digits.

A scene is a `size` x `size` canvas with `min_digits` to `max_digits` MNIST digit images, each
resized to a random side in [`min_side`, `max_side`] pixels (bilinear) and placed at a random
position, overlapping its predecessors by at most `max_overlap` of its box (placements that
overlap more are redrawn, and a digit that finds no place after `PLACEMENT_TRIES` draws is left
out). Where digits overlap the brighter pixel wins (max), as in `jaxvision.data.moving_mnist`,
whose digit pool and rendering (`read_digits`, `paste`, `bounce`) this module shares.

Every scene is a pure function of (seed, index) (`np.random.default_rng([seed, index])`), never
stored. Train scenes use digit images [:eval_digits_from] of the digits split and eval scenes
the rest (and another seed), so no eval scene shows a digit image seen in training.

An example:
- "inputs": the canvas [S, S, 1] float32 in [0, 1];
- "targets": the per-pixel class map [S, S] int32: 0 background, 1 + d where digit d is drawn
  on top and at least `THRESHOLD` / 255 bright;
- "boxes": [M, 4] float32 (x0, y0, x1, y1) pixels, x1 and y1 exclusive: the extent of the
  digit's pixels of at least `THRESHOLD` (the whole digit, also where another covers it), zero
  rows past the scene's digits (M = `max_digits`);
- "labels": [M] int32 digit classes, -1 past the scene's digits;
- "num_objects": [] int32, the scene's digits.

Video (`frames` > 1): the same digits move in straight lines at `min_speed`-`max_speed` pixels
per frame and bounce off the walls; "inputs" [T, S, S, 1], "targets" [T, S, S], "boxes"
[T, M, 4] per frame, "labels" [M] (a digit keeps its class), "num_objects" [].
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from jaxvision.data import base, moving_mnist

THRESHOLD = 64  # of 255: a digit's pixels from this brightness are its mask and its box
PLACEMENT_TRIES = 20  # draws of a position before a digit that overlaps too much is left out
NUM_CLASSES = 10  # digits; the class map has 1 + NUM_CLASSES classes (background first)

DEFAULTS = dict(
  digits_source="idx",  # idx (IDX files in data_dir) | tfds (TFDS "mnist" prepared in data_dir)
  data_dir="",  # the digits' folder; "": $JAXVISION_MNIST_DIR, else ../shared/data/mnist
  digits_split="t10k",  # IDX prefix ("t10k" | "train"); for tfds "t10k" means TFDS "test"
  eval_digits_from=8000,  # digit images [:N] make train scenes, [N:] eval scenes (disjoint)
  num_train=50_000,  # scenes per epoch (generated, never stored)
  num_eval=1_000,
  seed=0,  # train scenes use seed 2 * seed, eval scenes 2 * seed + 1
  size=96,  # canvas side in pixels
  min_digits=1,
  max_digits=5,  # M: the padded length of boxes and labels
  min_side=20,  # side of a resized 28x28 digit image (its glyph is about 0.7 of it)
  max_side=48,
  max_overlap=0.25,  # the largest fraction of a digit's box that earlier boxes may cover
  frames=1,  # 1: still scenes; T > 1: clips of moving digits
  min_speed=1.0,  # video: pixels per frame
  max_speed=3.0,
)


def resize(image: np.ndarray, side: int) -> np.ndarray:
  """A digit image [28, 28] uint8 resized to [side, side] (bilinear)."""
  return np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))


def extent(image: np.ndarray) -> np.ndarray:
  """(x0, y0, x1, y1) of the pixels of `image` [h, w] of at least `THRESHOLD`, x1 / y1 exclusive
  (the whole image for a blank one)."""
  rows, cols = np.nonzero(image >= THRESHOLD)
  if not len(rows):
    return np.array([0, 0, image.shape[1], image.shape[0]], np.float32)
  return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float32)


def covered(box: np.ndarray, others: list[np.ndarray]) -> float:
  """The fraction of `box`'s area that the union of `others`' boxes covers, on the pixel grid."""
  if not others:
    return 0.0
  x0, y0, x1, y1 = box.astype(int)
  hit = np.zeros((y1 - y0, x1 - x0), bool)
  for ox0, oy0, ox1, oy1 in (o.astype(int) for o in others):
    hit[max(oy0 - y0, 0) : max(oy1 - y0, 0), max(ox0 - x0, 0) : max(ox1 - x0, 0)] = True
  return float(hit.mean())


class SceneMaker:
  """`make_example(seed, index)` for one split: a pool of digit images and the scene options.

  Attributes:
    digits: the split's digit images [N, 28, 28] uint8.
    first_digit: index of `digits[0]` in the digits split (so `digit_ids` name the split's images).
    labels: the split's digit classes [N].
    Others: as the keys of `DEFAULTS`.
  """

  def __init__(
    self,
    digits: np.ndarray,
    labels: np.ndarray,
    *,
    first_digit: int = 0,
    size: int = 96,
    min_digits: int = 1,
    max_digits: int = 5,
    min_side: int = 20,
    max_side: int = 48,
    max_overlap: float = 0.25,
    frames: int = 1,
    min_speed: float = 1.0,
    max_speed: float = 3.0,
  ):
    if not 1 <= min_digits <= max_digits:
      raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
    if not 8 <= min_side <= max_side < size:
      raise ValueError(f"need 8 <= min_side <= max_side < size, got {min_side}, {max_side}, {size}")
    if not 0.0 <= max_overlap < 1.0:
      raise ValueError(f"max_overlap must be in [0, 1), got {max_overlap}")
    if frames < 1:
      raise ValueError(f"frames must be >= 1, got {frames}")
    if frames > 1 and not 0 < min_speed <= max_speed:
      raise ValueError(f"need 0 < min_speed <= max_speed, got {min_speed}, {max_speed}")
    if len(digits) < max_digits or len(digits) != len(labels):
      raise ValueError(f"cannot draw {max_digits} digits from {len(digits)} images and labels")
    self.digits, self.labels, self.first_digit = digits, np.asarray(labels), first_digit
    self.size, self.min_digits, self.max_digits = size, min_digits, max_digits
    self.min_side, self.max_side, self.max_overlap = min_side, max_side, max_overlap
    self.frames, self.min_speed, self.max_speed = frames, min_speed, max_speed

  def sample(self, seed: int, index: int) -> dict:
    """The random choices of scene (seed, index).

    Returns:
      dict with `digit_ids` [D] (indices into the digits split), `sides` [D] (resized side),
      `positions` [D, T, 2] (integer top-left x, y per frame); D <= max_digits digits placed.
    """
    rng = np.random.default_rng([seed, index])
    wanted = int(rng.integers(self.min_digits, self.max_digits + 1))
    ids = rng.choice(len(self.digits), wanted, replace=False)
    sides = rng.integers(self.min_side, self.max_side + 1, wanted)
    kept, starts, boxes = [], [], []
    for i, side in enumerate(sides):
      limit = self.size - side
      inside = extent(resize(self.digits[ids[i]], int(side)))
      for _ in range(PLACEMENT_TRIES):
        start = rng.uniform(0.0, limit, 2)
        x, y = np.rint(start).astype(int)
        box = inside + np.array([x, y, x, y], np.float32)
        if covered(box, boxes) <= self.max_overlap and all(
          covered(other, [box]) <= self.max_overlap for other in boxes
        ):
          kept.append(i), starts.append(start), boxes.append(box)
          break
    kept = np.array(kept, int)
    starts = np.array(starts, np.float64).reshape(-1, 2)
    if self.frames > 1:
      speed = rng.uniform(self.min_speed, self.max_speed, len(kept))
      heading = rng.uniform(0.0, 2.0 * np.pi, len(kept))
      velocity = speed[:, None] * np.stack([np.cos(heading), np.sin(heading)], -1)
      limits = (self.size - sides[kept]).astype(np.float64)[:, None]  # [D, 1]
      paths = [
        moving_mnist.bounce(s, v, self.frames, lim[0])
        for s, v, lim in zip(starts, velocity, limits, strict=True)
      ]
      positions = np.rint(np.array(paths).reshape(-1, self.frames, 2)).astype(np.int64)
    else:
      positions = np.rint(starts).astype(np.int64)[:, None, :]  # [D, 1, 2]
    return dict(digit_ids=ids[kept] + self.first_digit, sides=sides[kept], positions=positions)

  def __call__(self, seed: int, index: int) -> dict[str, np.ndarray]:
    """The example (seed, index): see the module docstring."""
    spec = self.sample(seed, index)
    t, m, s = self.frames, self.max_digits, self.size
    canvas = np.zeros((t, s, s), np.uint8)
    classes = np.zeros((t, s, s), np.int32)
    boxes = np.zeros((t, m, 4), np.float32)
    labels = np.full((m,), -1, np.int32)
    for k, (digit_id, side, path) in enumerate(
      zip(spec["digit_ids"], spec["sides"], spec["positions"], strict=True)
    ):
      image = resize(self.digits[digit_id - self.first_digit], int(side))
      inside = extent(image)
      labels[k] = self.labels[digit_id - self.first_digit]
      for f, (x, y) in enumerate(path):
        moving_mnist.paste(
          canvas[f], image, x, y, classes=classes[f], label=1 + labels[k], threshold=THRESHOLD
        )
        boxes[f, k] = inside + np.array([x, y, x, y], np.float32)
    example = {
      "inputs": (canvas.astype(np.float32) / 255.0)[..., None],
      "targets": classes,
      "boxes": boxes,
      "labels": labels,
      "num_objects": np.asarray(len(spec["digit_ids"]), np.int32),
    }
    if t == 1:
      example.update(inputs=example["inputs"][0], targets=classes[0], boxes=boxes[0])
    return example


def scene_makers(config, digits: np.ndarray, labels: np.ndarray) -> tuple[SceneMaker, SceneMaker]:
  """(train, eval) `SceneMaker`s over disjoint parts of the digits ([:eval_digits_from] / rest)."""
  split = config.eval_digits_from
  if not 0 < split < len(digits):
    raise ValueError(f"eval_digits_from must lie in (0, {len(digits)}), got {split}")
  options = dict(
    size=config.size,
    min_digits=config.min_digits,
    max_digits=config.max_digits,
    min_side=config.min_side,
    max_side=config.max_side,
    max_overlap=float(config.max_overlap),
    frames=config.frames,
    min_speed=float(config.min_speed),
    max_speed=float(config.max_speed),
  )
  return (
    SceneMaker(digits[:split], labels[:split], first_digit=0, **options),
    SceneMaker(digits[split:], labels[split:], first_digit=split, **options),
  )


def load(config) -> base.Dataset:
  """Generated train and eval sources of `config.num_train` / `config.num_eval` scenes."""
  if config.num_train <= 0 or config.num_eval <= 0:
    raise ValueError("scenes needs data.num_train and data.num_eval > 0")
  digits, labels = moving_mnist.read_digits(config, with_labels=True)
  train, eval_ = scene_makers(config, digits, labels)
  s, size = config.digits_split, config.size
  what = "scenes" if config.frames == 1 else f"clips of {config.frames} frames"
  info = {"num_classes": NUM_CLASSES, "max_objects": config.max_digits, "canvas": size}
  if config.frames > 1:
    info["time_axes"] = 1
  return base.Dataset(
    name="scenes",
    train=base.GeneratedSource(train, config.num_train, seed=2 * config.seed),
    eval=base.GeneratedSource(eval_, config.num_eval, seed=2 * config.seed + 1),
    description=(
      f"scenes ({config.digits_source} {s}[:{config.eval_digits_from}] / "
      f"{s}[{config.eval_digits_from}:] digits): {config.min_digits}-{config.max_digits} digits "
      f"of {config.min_side}-{config.max_side} px on {size}x{size} {what}; "
      f"{config.num_train} / {config.num_eval}"
    ),
    info=info,
  )
