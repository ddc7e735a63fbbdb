"""The progress line: metrics, and per-class series folded to their range."""

import io

from jaxvision import writers


def test_progress_line_folds_per_class_series():
  scalars = {
    "eval_miou": 0.9152,
    "eval_iou_0": 0.99,
    "eval_iou_1": 0.88,
    "eval_iou_2": 0.93,
    "eval_ap50_class3": 0.5,
    "eval_ap50_class7": 0.25,  # two of a series: kept as they are
    "eval_layer2": 1.0,
  }
  assert writers.progress_entries(scalars) == [
    "eval_miou 0.9152",
    "eval_iou_{0..2} 0.88..0.99",
    "eval_ap50_class3 0.5",
    "eval_ap50_class7 0.25",
    "eval_layer2 1",
  ]
  stream = io.StringIO()
  writer = writers.ProgressWriter(10, stream=stream, label="[eval]")
  writer.write(10, scalars)
  assert stream.getvalue() == (
    "[eval] step 10/10 | eval_miou 0.9152 eval_iou_{0..2} 0.88..0.99 eval_ap50_class3 0.5 "
    "eval_ap50_class7 0.25 eval_layer2 1\n"
  )
