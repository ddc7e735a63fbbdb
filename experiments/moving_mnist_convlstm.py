"""Moving MNIST next-frame prediction with a ConvLSTM (encoder -> 2 ConvLSTMs -> decoder).

  python -m jaxvision.main --config=experiments/moving_mnist_convlstm.py \\
      --workdir=runs/mmnist_convlstm

Offline: clips are generated on the fly from the MNIST IDX files in $JAXVISION_MNIST_DIR (else
../shared/data/mnist); train clips use digit images t10k[:8000], eval clips t10k[8000:].

The default is sized for a 2-core CPU: one digit on 48x48 frames, 12 frames (6 observed, 6 to
predict), batch 16, 1,000 steps. Its model (`convlstm_cdna`) predicts each frame as the previous
one moved by 2 predicted 9x9 kernels (CDNA, Finn et al. 2016), composited by predicted masks with
a drawn frame, through layer-normalised ConvLSTMs (`jaxvision.models.video`). `:pixels` is the
earlier recipe (`convlstm_predictor`: every frame drawn by the decoder, plain ConvLSTMs, 2,000
steps): its free-running rollouts blur into grey blobs (SSIM 0.38 against copy-last's 0.57 over 2
seeds, at an MSE 2.0x lower), because its ConvLSTMs saturate early in training (|h| ~0.97, the
same for every clip: the decoder then draws from the current frame through its skips alone, with
no motion to go by). Without layer normalisation the CDNA model saturated alike and settled on
one blurring kernel for every clip, whatever the loss (BCE or MSE), learning rate (2e-3 or 5e-4),
skips or teacher forcing; with it, a 400-step pilot reached SSIM 0.62 (copy-last 0.58) at an MSE
2.8x lower (200 eval clips). 2 seeds of 1,000 steps: SSIM 0.75 against copy-last's 0.57 at an
MSE 4.0x lower (RESULTS.md), 31-44 minutes each on this 2-core CPU shared with other trainings
and tests (not timed alone).
(Frames must exceed the 28-pixel digits, so 32x32 would leave them 4 pixels to move in; the
encoder's stride 4 must divide the side.) Training runs the model as evaluation does: free
running from the 6 observed frames, each prediction fed back as the next input, with per-pixel
binary cross-entropy backpropagated through the whole rollout (`--config.teacher_forcing=True`
feeds the true frames instead: one earlier seed of that plateaued from step 500 at an MSE 1.8x
below copy-last with blurred frames). Evaluation rolls the model out freely and reports MSE and
SSIM next to the copy-last-frame baseline (`eval_mse_ratio` > 1 beats it), with a GIF of
observed | predicted | true per evaluation in `<workdir>/samples/`. A rollout of the trained model:

  python -m jaxvision.tools.sample --workdir=runs/mmnist_convlstm --out=rollout.gif

`:standard` is the usual benchmark (Srivastava et al. 2015): two digits on 64x64 frames, 10
observed and 10 predicted, 20,000 steps; about 7x the compute per step: for an accelerator.
"""

import ml_collections

from jaxvision import config_lib, data, models, optim
from jaxvision.tools import sweep

VARIANTS = ("cpu", "pixels", "standard")


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"moving_mnist_convlstm takes one of {VARIANTS}, got {variant!r}")
  config = config_lib.base_config(trainer="video")
  # Classifier-only keys: a key nothing reads would be a silent no-op override.
  del config.label_smoothing
  del config.augment
  config.seed = 0
  config.loss = "bce"  # bce (per-pixel cross-entropy of the logits) | mse (of sigmoid pixels)
  config.teacher_forcing = False  # train on the model's own rollout, as it is evaluated
  config.data = data.data_config(
    "moving_mnist",
    task="predict",
    size=48,
    frames=12,
    observed=6,
    digits_per_clip=1,
    batch_size=16,
    eval_batch_size=200,
    num_eval=1000,
  )
  # CDNA output: the input frame moved by predicted kernels, composited with a drawn frame.
  config.model = models.model_config("convlstm_cdna")
  if variant == "pixels":
    config.model = models.model_config("convlstm_predictor")
  config.optimizer = optim.optimizer_config(name="adam", learning_rate=2e-3, grad_clip_norm=1.0)
  config.schedule = optim.schedule_config(name="warmup_cosine", warmup_steps=100, end_factor=0.05)
  config.evaluators = ml_collections.ConfigDict(
    {"eval": dict(type="video_prediction", pred="predict", batch_size=0, gif_clips=4, gif_scale=2)}
  )
  config.num_train_steps = 1000
  config.log_every_steps = 50
  config.eval_every_steps = 250
  config.checkpoint.every_steps = 250
  if variant == "pixels":  # the recipe of the drawing model's rows
    config.num_train_steps = 2000
    config.eval_every_steps = config.checkpoint.every_steps = 500
  if variant == "standard":
    config.data.update(size=64, frames=20, observed=10, digits_per_clip=2)
    config.data.eval_batch_size = 100
    config.num_train_steps = 20_000
    config.schedule.warmup_steps = 500
    config.log_every_steps = 200
    config.eval_every_steps = config.checkpoint.every_steps = 2000
  return config


def get_sweep(variant: str = "cpu"):
  """Two seeds (runs/moving_mnist_convlstm/seed=K)."""
  del variant
  return sweep.product(seed=range(2))
