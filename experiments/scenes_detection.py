"""Detection of digits in multi-digit scenes with an anchor-free CenterNet, scored by COCO AP.

  python -m jaxvision.main --config=experiments/scenes_detection.py \\
      --workdir=runs/scenes_detection

Offline: scenes are generated on the fly from the MNIST IDX files in $JAXVISION_MNIST_DIR (else
../shared/data/mnist): 1-5 digits of 20-48 px on 96x96 canvases, train scenes from digit images
t10k[:8000], eval scenes (1,000) from t10k[8000:] (`jaxvision.data.scenes`); a digit's box is
the extent of its pixels of at least 64/255. The detector (`centernet`: a U-Net backbone of
16-96 channels at strides 2-16 with batch norm, back up to stride 4) predicts per class a centre
heatmap on a 24x24 grid, each centre's box size and sub-cell offset; it is trained with
CenterNet's focal loss (alpha 2, beta 4) + 0.1 x L1 size + 1 x L1 offset losses, on scenes
shifted by up to 8 pixels with their boxes; boxes are the 40 strongest 3x3 heatmap peaks (no
NMS). Evaluation reports COCO AP@0.5, AP@[.5:.95] and AP@0.75 (pycocotools, every eval scene;
per-digit AP@0.5 as eval_ap50_class<k> in metrics.jsonl and results.json) and draws the first
eval scenes' detections (green) over the true boxes (red) in `<workdir>/samples/step_N.png`.

Sized for a 2-core CPU: batch 32, 3,000 steps of AdamW with a 200-step warm-up and cosine decay;
a step is 13 GFLOP (XLA's count; a sixth of scenes_segmentation's U-Net). A 400-step smoke run
(warm-up 50) already reached AP@0.5 0.90 (AP@[.5:.95] 0.54) on the first 200 eval scenes.

`:video` detects digits in moving-digit clips (8 frames of the same digits moving at 1-3 px per
frame) frame by frame with the same detector; its AP is over every frame of the 200 eval clips.

Both seeds: `python -m jaxvision.tools.sweep --config=experiments/scenes_detection.py`.
"""

import ml_collections

from jaxvision import config_lib, models
from jaxvision.tools import sweep

VARIANTS = ("still", "video")


def get_config(variant: str = "still") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"scenes_detection takes one of {VARIANTS}, got {variant!r}")
  config = config_lib.scenes_base_config(
    "detection",
    variant,
    batch_size=32,
    clip_batch_size=4,
    learning_rate=2e-3,
    num_train_steps=3000,
  )
  config.detection = ml_collections.ConfigDict(
    dict(
      top_k=40,  # detections per scene (the strongest heatmap peaks over every class)
      size_weight=0.1,  # of the L1 size loss, next to the focal loss of the heatmap
      offset_weight=1.0,  # of the L1 offset loss
      min_overlap=0.7,  # of CenterNet's Gaussian radius
    )
  )
  config.model = models.model_config("centernet")
  config.evaluators = ml_collections.ConfigDict(
    {
      "eval": dict(
        type="detection",
        pred="detect",
        batch_size=0,
        min_score=0.001,  # detections below are not scored (at most a recall tail)
        png_scenes=8,
        png_scale=3,
        png_min_score=0.3,
      )
    }
  )
  if variant == "video":
    config.evaluators.eval.png_scenes = 3
    config.evaluators.eval.png_scale = 2
  return config


def get_sweep(variant: str = "still"):
  """Two seeds (runs/scenes_detection/seed=K)."""
  del variant
  return sweep.product(seed=range(2))
