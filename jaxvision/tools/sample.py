"""Samples from a trained run's latest checkpoint: GAN grids and latent walks, video rollouts.

  python -m jaxvision.tools.sample --workdir=runs/mnist_dcgan_idx --num=64 --out=grid.png
  python -m jaxvision.tools.sample --workdir=runs/mnist_dcgan_idx --interpolate --out=walk.gif
  python -m jaxvision.tools.sample --workdir=runs/mmnist_convlstm --clips=4 --out=rollout.gif

A GAN run uses the generator's EMA weights when the run kept an EMA (`--noema` for the raw
weights); a class-conditional GAN draws the class `--label=K` ("a 7": `--label=7`), or every class
in turn. A video prediction run (trainer "video") rolls its model out freely on the first
`--clips` eval clips from their observed frames: a GIF of observed | predicted | true, or (.png)
a film strip with each true clip above its predicted frames.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from jaxvision import images, runs, video_images
from jaxvision.workdir import load_config

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Flags are defined only when this runs as a program: importing it defines nothing."""
  flags.DEFINE_string("workdir", None, "A GAN or video prediction run's workdir.")
  flags.DEFINE_string(
    "out", None, "Output file: .png for a grid, .gif with --interpolate; a video run: .gif or .png."
  )
  flags.DEFINE_integer("num", 64, "Images in the grid (or walks side by side with --interpolate).")
  flags.DEFINE_integer("seed", 0, "Seed of the latents.")
  flags.DEFINE_bool("ema", True, "Sample from the EMA weights when the run has them.")
  flags.DEFINE_bool("interpolate", False, "Write an animation of latent walks instead of a grid.")
  flags.DEFINE_integer(
    "points", 6, "With --interpolate: latents each walk passes through (a loop)."
  )
  flags.DEFINE_integer("frames_between", 12, "With --interpolate: frames between two latents.")
  flags.DEFINE_integer("scale", 2, "Pixel upscaling of the output.")
  flags.DEFINE_integer(
    "label", -1, "A class-conditional GAN: the class to draw (-1: every class in turn)."
  )
  flags.DEFINE_integer("clips", 4, "A video run: eval clips to roll out (the first ones).")
  flags.mark_flags_as_required(["workdir", "out"])


def slerp(a: jnp.ndarray, b: jnp.ndarray, t: float) -> jnp.ndarray:
  """Spherical interpolation between latents [..., D] (stays on the Gaussian's typical shell)."""
  cos = jnp.sum(a * b, -1, keepdims=True) / (
    jnp.linalg.norm(a, axis=-1, keepdims=True) * jnp.linalg.norm(b, axis=-1, keepdims=True)
  )
  omega = jnp.arccos(jnp.clip(cos, -1.0, 1.0))
  so = jnp.sin(omega)
  safe = jnp.where(so < 1e-6, 1.0, so)
  mixed = (jnp.sin((1 - t) * omega) * a + jnp.sin(t * omega) * b) / safe
  return jnp.where(so < 1e-6, (1 - t) * a + t * b, mixed)


def latent_walk(generate, z_dim: int, num: int, points: int, frames_between: int, key):
  """Frames (uint8 grids) of `num` closed walks through `points` random latents each."""
  anchors = jax.random.normal(key, (points, num, z_dim))
  frames = []
  for p in range(points):
    a, b = anchors[p], anchors[(p + 1) % points]
    for f in range(frames_between):
      frames.append(images.grid(np.asarray(generate(slerp(a, b, f / frames_between)))))
  return frames


def load_rollouts(workdir: str, num_clips: int) -> tuple[np.ndarray, np.ndarray, int]:
  """A video prediction run's free-running predictions of its first `num_clips` eval clips.

  Returns:
    (clips [N, T, H, W, C], predicted pixels [N, P, H, W, C] of their last P frames, the step of
    the checkpoint). The clips are regenerated from the run's data config (the MNIST digit files
    must be where `data.data_dir` says).
  """
  run = runs.load_run(workdir)
  if run.config.trainer != "video":
    raise ValueError(f"{workdir} is a {run.config.trainer!r} run, not a video run")
  source = run.dataset().eval
  if not 1 <= num_clips <= len(source):
    raise app.UsageError(f"--clips={num_clips}: the run has {len(source)} eval clips")
  batch = source.get(np.arange(num_clips))
  logits = run.predict("predict")({"inputs": batch["inputs"], "targets": batch["targets"]})
  return batch["inputs"], np.asarray(jax.nn.sigmoid(logits)), run.step


def write_rollouts(workdir: str, out: str, num_clips: int, scale: int) -> int:
  """Writes `out` (.gif: observed | predicted | true per row; .png: a film strip) for a video
  run; returns the checkpoint's step."""
  if not out.endswith((".gif", ".png")):
    raise app.UsageError(f"--out={out}: a video run writes a .gif or a .png")
  clips, predicted, step = load_rollouts(workdir, num_clips)
  pairs = list(zip(clips, predicted, strict=True))
  if out.endswith(".gif"):
    rows = [video_images.prediction_panels(c, p) for c, p in pairs]
    video_images.save_gif(out, rows, scale=scale)
  else:
    strip = [row for c, p in pairs for row in video_images.prediction_strip(c, p)]
    video_images.save_strip(out, strip, scale=scale)
  return step


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if load_config(FLAGS.workdir).get("trainer") == "video":
    step = write_rollouts(FLAGS.workdir, FLAGS.out, FLAGS.clips, FLAGS.scale)
    print(f"Wrote {FLAGS.out} from {FLAGS.workdir} (step {step})")
    return
  gan = runs.load_run(FLAGS.workdir)
  if gan.config.trainer != "gan":
    raise app.UsageError(f"{FLAGS.workdir} is a {gan.config.trainer!r} run: no samples to draw")
  trained = gan.predict("generate" if FLAGS.ema else "generate_raw")
  z_dim, step, num_classes = gan.config.z_dim, gan.step, gan.task.num_classes
  if FLAGS.label >= num_classes and num_classes:
    raise app.UsageError(f"--label={FLAGS.label}: the GAN has classes 0..{num_classes - 1}")
  if FLAGS.label >= 0 and not num_classes:
    raise app.UsageError("--label needs a class-conditional GAN (config.conditional=True)")

  def generate(z):  # a conditional GAN: the asked class, or (no "labels") the classes in turn
    labels = {"labels": np.full(len(z), FLAGS.label)} if FLAGS.label >= 0 else {}
    return trained({"z": np.asarray(z), **labels})

  key = jax.random.key(FLAGS.seed)
  if FLAGS.interpolate:
    frames = latent_walk(generate, z_dim, FLAGS.num, FLAGS.points, FLAGS.frames_between, key)
    if FLAGS.scale > 1:
      frames = [f.repeat(FLAGS.scale, 0).repeat(FLAGS.scale, 1) for f in frames]
    images.save_gif(frames, FLAGS.out)
  else:
    samples = np.asarray(generate(jax.random.normal(key, (FLAGS.num, z_dim))))
    images.save_grid(samples, FLAGS.out, scale=FLAGS.scale)
  print(f"Wrote {FLAGS.out} from {FLAGS.workdir} (step {step})")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
