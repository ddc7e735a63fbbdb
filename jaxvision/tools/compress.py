"""Int8 post-training quantization of a trained classifier: accuracy, size on disk, latency.

  python -m jaxvision.tools.compress --workdir=runs/mnist_cnn_idx/data.fold=0 --calibration=512

The run's weights become int8 per output channel and each Dense / Conv input is rounded to int8
at a scale calibrated on the first `--calibration` *training* images (`jaxvision.quantize`). The
int8 model is exported (`model_int8.npz`, deflated; a pruned model's sparse kernels as bitmask
and non-zeros), read back, and evaluated on the whole eval split beside the float model; the
float32 weights are exported as they are stored (`model_float32.npz`) for the size comparison,
and the ratio to them deflated too is recorded beside it. Printed, and written as a results
record (`<record_dir>/results.json`, default `<workdir>/compress/calibration=<N>/`, for the report
and a campaign's `Analysis`): accuracies and their difference, parameters and non-zeros, bytes of
both files and their ratio, and the float model's CPU latency per eval batch (the int8 model is
simulated in float arithmetic here, so its latency would say nothing and is not reported).

Exit status: 0 done, 1 an error (one line).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import jax
import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS
METRICS = (
  {"name": "accuracy_int8", "label": "int8 accuracy", "format": "percent", "better": "higher"},
  {"name": "accuracy_float", "label": "float accuracy", "format": "percent"},
  {"name": "accuracy_change", "label": "int8 - float", "format": "percent"},
  {"name": "size_ratio", "label": "float32 / int8 bytes", "format": "float"},
  {"name": "size_ratio_deflated", "label": "float32 deflated / int8 bytes", "format": "float"},
  {"name": "bytes_int8", "label": "int8 bytes", "format": "int"},
  {"name": "bytes_float", "label": "float32 bytes", "format": "int"},
  {"name": "num_nonzero", "label": "non-zeros", "format": "int"},
  {"name": "latency_ms_float", "label": "float ms / batch", "format": "float"},
)  # fmt: skip


def _define_flags():
  flags.DEFINE_string("workdir", None, "A trained classifier run.")
  flags.DEFINE_integer("calibration", 512, "Training images that calibrate the activations.")
  flags.DEFINE_integer("batch_size", 500, "Images per evaluation call (and the latency's batch).")
  flags.DEFINE_string(
    "record_dir", None, "Folder of results.json and the files (default: <workdir>/compress/...)."
  )


def record_dir(workdir: str, calibration: int) -> str:
  return os.path.join(workdir, "compress", f"calibration={calibration}")


def compress(workdir: str, calibration: int, directory: str, batch_size: int = 500) -> dict:
  """Quantizes, exports, reloads and evaluates the run in `workdir`; returns the numbers."""
  from jaxvision import pruning, quantize, runs

  run = runs.load_run(workdir)
  if run.config.trainer != "classifier":
    raise ValueError(f"{workdir} is a {run.config.trainer!r} run, not a classifier run")
  dataset = run.dataset()
  predict = run.task.predict_fns()["predict"]
  logits = lambda params: lambda x: predict(run.state.replace(params=params), {"inputs": x})
  train = dataset.train.get(np.arange(min(calibration, len(dataset.train))))["inputs"]
  peaks = quantize.calibrate(
    logits(run.state.params), [train[i : i + batch_size] for i in range(0, len(train), batch_size)]
  )
  float_params = jax.device_get(run.state.params)
  qparams = quantize.quantize_params(float_params)
  bytes_int8 = quantize.export(qparams, peaks, os.path.join(directory, "model_int8.npz"))
  bytes_float = quantize.export_float(float_params, os.path.join(directory, "model_float32.npz"))
  bytes_float_deflated = quantize.deflated_float_bytes(float_params)
  loaded, loaded_peaks = quantize.load_export(os.path.join(directory, "model_int8.npz"))
  float_fn = jax.jit(logits(run.state.params))
  int8_fn = jax.jit(quantize.quantized_logits(logits(loaded), loaded_peaks))
  eval_ = dataset.eval.get(np.arange(len(dataset.eval)))
  images, labels = eval_["inputs"], eval_["targets"]
  correct = {"float": 0, "int8": 0}
  for i in range(0, len(images), batch_size):
    x, y = images[i : i + batch_size], labels[i : i + batch_size]
    correct["float"] += int((np.asarray(float_fn(x)).argmax(-1) == y).sum())
    correct["int8"] += int((np.asarray(int8_fn(x)).argmax(-1) == y).sum())
  batch = images[:batch_size]
  jax.block_until_ready(float_fn(batch))
  times = []
  for _ in range(20):
    start = time.perf_counter()
    jax.block_until_ready(float_fn(batch))
    times.append(time.perf_counter() - start)
  accuracy = {k: v / len(images) for k, v in correct.items()}
  return {
    "accuracy_float": accuracy["float"],
    "accuracy_int8": accuracy["int8"],
    "accuracy_change": accuracy["int8"] - accuracy["float"],
    "bytes_float": bytes_float,
    "bytes_int8": bytes_int8,
    "size_ratio": bytes_float / bytes_int8,
    # the same ratio with the float file deflated too: what the int8 format itself gains
    "bytes_float_deflated": bytes_float_deflated,
    "size_ratio_deflated": bytes_float_deflated / bytes_int8,
    "num_params": sum(int(np.size(p)) for p in jax.tree.leaves(run.state.params)),
    "num_nonzero": pruning.nonzeros(run.state.params),
    "latency_ms_float": 1e3 * statistics.median(times),
    "num_eval": len(images),
    "step": run.step,
  }


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from jaxvision.tools import record

  start = time.perf_counter()
  directory = FLAGS.record_dir or record_dir(FLAGS.workdir, FLAGS.calibration)
  try:
    results = compress(FLAGS.workdir, FLAGS.calibration, directory, FLAGS.batch_size)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"compress: error: {e}")
  settings = {"calibration": FLAGS.calibration, "method": "int8 ptq"}
  command = record.command_line("compress")
  made = record.make(
    FLAGS.workdir, "compress", settings, results, METRICS, command, time.perf_counter() - start
  )
  record.write(directory, made)
  print(
    f"{FLAGS.workdir} (step {results['step']}), {results['num_eval']} eval images: float "
    f"{100 * results['accuracy_float']:.2f}%, int8 {100 * results['accuracy_int8']:.2f}% "
    f"({100 * results['accuracy_change']:+.2f} points); {results['num_nonzero']:,} of "
    f"{results['num_params']:,} parameters non-zero; files: float32 {results['bytes_float']:,} B,"
    f" int8 {results['bytes_int8']:,} B deflated ({results['size_ratio']:.2f}x smaller; "
    f"{results['size_ratio_deflated']:.2f}x against the float32 file deflated); float latency "
    f"{results['latency_ms_float']:.2f} ms per batch of {FLAGS.batch_size}. Wrote {directory}"
  )


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
