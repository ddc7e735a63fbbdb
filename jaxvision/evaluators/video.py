"""Frame prediction: free-running MSE and SSIM against the copy-last-frame baseline, and a GIF.

Over the whole eval split (padded batches, masked), the trainer's `pred` function rolls each clip
out from its context frames; its predicted frames are scored per frame (MSE, SSIM) and averaged
over the predicted frames and the clips. The same numbers for "repeat the last observed frame"
say whether the model has learnt motion at all: `<name>_mse_ratio` = copy-last MSE / model MSE is
above 1 exactly when it beats the baseline. Every evaluation also writes
`<workdir>/samples/step_N.gif`: observed | predicted | true, one row per fixed eval clip.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision import parallel, video_images, video_metrics
from jaxvision import workdir as workdir_lib
from jaxvision.evaluators.common import MetricSpec, predict_rows, summed_over_split


def eval_step(state, batch, *, predict_fn, axis_name=None) -> dict:
  """Sums over the real (mask == 1) clips of a batch of their per-clip mean MSE and SSIM, for the
  model's rollout ("mse", "ssim") and the copy-last baseline ("copy_last_mse", ...), and "count".

  Args:
    state: the (placed) train state.
    batch: {"inputs": clips [B, T, H, W, C], "targets": their last P frames, "mask": [B]}.
    predict_fn: `(state, batch) -> logits [B, P, H, W, C]`, free-running from the clips' first
      T - P frames (P: the targets' frames).
    axis_name: the device axis under pmap (sums are `psum`ed over it); None under jit.
  """
  clips, targets, mask = batch["inputs"], batch["targets"], batch["mask"]
  num_predict = targets.shape[1]
  pixels = jax.nn.sigmoid(predict_fn(state, batch))  # [B, P, H, W, C]
  baseline = video_metrics.copy_last_metrics(clips, num_predict)
  per_frame = {
    **video_metrics.prediction_metrics(pixels, targets),
    **{f"copy_last_{k}": v for k, v in baseline.items()},
  }  # each [B, P]
  sums = {k: jnp.sum(v.mean(axis=1) * mask) for k, v in per_frame.items()}
  sums["count"] = jnp.sum(mask)
  return parallel.psum(sums, axis_name)


class Evaluator:
  """`<name>_{mse,ssim,copy_last_mse,copy_last_ssim,mse_ratio}` and a GIF of rollouts.

  Settings (`config.evaluators.<name>`):
    pred: the trainer's prediction function (default "predict").
    batch_size: clips per eval batch (0: `config.data.eval_batch_size`).
    gif_clips: eval clips (the first ones, so the same every time) in each GIF; 0: no GIF.
    gif_scale: pixel upscaling of the GIF.
  """

  def __init__(
    self,
    name: str,
    context,
    *,
    pred: str = "predict",
    batch_size: int = 0,
    gif_clips: int = 4,
    gif_scale: int = 2,
  ):
    strategy = context.strategy
    self._name, self._strategy, self._workdir = name, strategy, context.workdir
    self._source = context.dataset.eval
    self._batch_size = batch_size or context.batch_size
    strategy.check_batch_size(self._batch_size, f"evaluators.{name}.batch_size")
    if not 0 <= gif_clips <= len(self._source):
      raise ValueError(f"evaluators.{name}.gif_clips={gif_clips} not in [0, {len(self._source)}]")
    if gif_scale < 1:
      raise ValueError(f"evaluators.{name}.gif_scale={gif_scale} must be >= 1")
    predict_fn = context.predict_fns[pred]
    self._step = strategy.compile(
      lambda state, batch: eval_step(
        state, batch, predict_fn=predict_fn, axis_name=strategy.axis_name
      ),
      compiler_options=context.compiler_options,
    )
    # P, the frames to predict, is fixed by the data: the rollout compiles once for it.
    self._target_shape = self._source.get(np.arange(1))["targets"].shape[1:]
    self._rollout = strategy.compile(
      lambda state, batch: jax.nn.sigmoid(predict_fn(state, batch)),
      compiler_options=context.compiler_options,
    )
    self._gif_clips, self._gif_scale = gif_clips, gif_scale
    self.metrics = (
      MetricSpec(f"{name}_mse", "MSE", "float", "lower"),
      MetricSpec(f"{name}_ssim", "SSIM", "float", "higher"),
      MetricSpec(f"{name}_mse_ratio", "copy-last MSE / MSE", "float", "higher"),
      MetricSpec(f"{name}_copy_last_mse", "copy-last MSE", "float", None),
      MetricSpec(f"{name}_copy_last_ssim", "copy-last SSIM", "float", None),
    )

  def rollout(self, state, clips: np.ndarray) -> np.ndarray:
    """Predicted pixels [N, P, H, W, C] of eval-shaped clips [N, T, H, W, C] (any N: padded to
    a multiple of the devices), rolled out from their first T - P frames."""
    targets = np.zeros((len(clips), *self._target_shape), clips.dtype)  # only their shape is read
    batch = {"inputs": clips, "targets": targets}
    return predict_rows(self._rollout, state, batch, self._strategy)

  def run(self, state, step: int) -> dict:
    totals = summed_over_split(self._step, state, self._source, self._batch_size, self._strategy)
    mean = {k: float(v / totals["count"]) for k, v in totals.items() if k != "count"}
    if self._gif_clips:
      self.write_gif(
        state, os.path.join(workdir_lib.samples_dir(self._workdir), f"step_{step}.gif")
      )
    name = self._name
    return {
      f"{name}_mse": mean["mse"],
      f"{name}_ssim": mean["ssim"],
      f"{name}_copy_last_mse": mean["copy_last_mse"],
      f"{name}_copy_last_ssim": mean["copy_last_ssim"],
      f"{name}_mse_ratio": mean["copy_last_mse"] / mean["mse"],
    }

  def provenance(self) -> dict:
    return {}

  def write_gif(self, state, path: str) -> None:
    """Writes observed | predicted | true for the first `gif_clips` eval clips to `path` (on
    process 0; every process joins the compiled rollout)."""
    clips = self._source.get(np.arange(self._gif_clips))["inputs"]  # [N, T, H, W, C]
    predicted = self.rollout(state, clips)  # [N, P, H, W, C]
    if jax.process_index() == 0:
      rows = [video_images.prediction_panels(c, p) for c, p in zip(clips, predicted, strict=True)]
      video_images.save_gif(path, rows, scale=self._gif_scale)
