"""Spoken digit strings: a conv + BiLSTM recogniser trained with CTC, scored on held-out voices.

  python -m jaxvision.main --config=experiments/speech_ctc.py --workdir=runs/speech_ctc
  python -m jaxvision.tools.sweep --config=experiments/speech_ctc.py      # seeds 0 and 1

Offline: utterances of 1-7 digits are synthesised by eSpeak NG (`pip install espeakng-loader`)
in 8 English accents and ~100 voice variants at random speeds, pitches and SNRs, and their log-mel
features cached on first use (`jaxvision.data.speech`; 44,200 utterances, made once: 14-33 ms
each). Voice
families every 4th by name and the accent en-gb-scotland are never heard in training; the
evaluator reports the word error rate, string accuracy and single-digit accuracy on the held-out
voices (`eval_*`) and, separately, on the held-out voices in the held-out accent
(`eval_accent_*`), and prints a few decoded examples at every evaluation.

Model: 40 log-mel bands (25 ms every 10 ms) -> three 3x3 stride-2 convolutions of 8, 16 and 32
channels (time downsampled 8x, to 80 ms frames: a digit word spans 3 or more) -> 2 bidirectional
LSTM layers of 128 -> a dense layer over the CTC blank and the 10 digit words (698,891 params);
greedy decoding (`--config.evaluators.eval.beam_width=8`: prefix beam search). The front end is
narrow because XLA:CPU's 2-D convolution gradients are slow: 32 channels in every layer made the
front end cost as much as the two BiLSTM layers. SpecAugment: 2 frequency masks of up to 6 bands,
2 time masks of up to 8 frames, and each utterance's mel axis stretched by a factor in [0.9, 1.1]
(vocal tract length perturbation): without it, 2 seeds reached WER 0.83% but single-digit
accuracy 97.9%, held-out voices' isolated words failing alike in both (a voice's "one" heard as
"five", an isolated "oh" as "four"). Adam, peak learning rate 2e-3 after 200 warm-up steps, cosine
decay, gradients clipped to norm 5, batch 32, 8,000 steps on 40,000 training utterances (6.4
epochs). Half of each (20,000 utterances, 4,000 steps) reached WER 0.76% but single-digit accuracy
97.6% over 2 seeds; the 13 isolated words its seed 0 missed were all under pink noise, and with
twice the utterances and steps seed 0 misses 7 of them (docs/speech_decoded_seed0.txt). A
quarter of the training utterances isolated words instead of a seventh
(`--config.data.train_digit_counts=1,1,2,3,4,5,6,7`, seed 0) did not help: WER 0.43%,
single-digit accuracy 98.75% (this recipe's seed 0: 99.00%). Five of the seven isolated words
seed 0 still missed were an "oh" (heard as "four", "two" or "eight"): a 0 is said "oh" in 30% of
cases in both splits, so training held ~170 isolated "oh"s against ~570 of every other word; the
train split now says "oh" and "zero" equally often (`data.train_oh_prob=0.5`; the eval split
keeps 0.3, so the scores stay comparable).

Measured: this model runs 6.8 steps/s on an otherwise idle 2-core CPU (4,000 steps in 587 s; 4.5 on
the Intel Xeon of the latest runs, 28 minutes for 8,000 steps), so
8,000 steps take about 20 minutes with the evaluations; results in RESULTS.md. A 300-step smoke run
on 2,000 utterances took the CTC loss from 20 to 1.3 and reached 6.4% WER on 280 held-out-voice
utterances (17% in the held-out accent).
"""

import ml_collections

from jaxvision import config_lib, data, models, optim
from jaxvision.data import audio
from jaxvision.tools import sweep


def get_config() -> ml_collections.ConfigDict:
  config = config_lib.base_config(trainer="ctc")
  # Classifier-only keys: a key nothing reads would be a silent no-op override.
  for key in ("label_smoothing", "augment", "distill", "qat"):
    del config[key]
  config.seed = 0
  config.xla.cpu_ynn_fusions = True  # faster for recurrent steps on XLA:CPU
  config.data = data.data_config(
    "speech", num_train=40_000, train_oh_prob=0.5, batch_size=32, eval_batch_size=200
  )
  config.model = models.model_config("speech_bilstm")
  config.spec_augment = audio.spec_augment_config(
    freq_masks=2, freq_width=6, time_masks=2, time_width=8, vtlp=0.1
  )
  config.optimizer = optim.optimizer_config(name="adam", learning_rate=2e-3, grad_clip_norm=5.0)
  config.schedule = optim.schedule_config(name="warmup_cosine", warmup_steps=200, end_factor=0.02)
  config.evaluators = ml_collections.ConfigDict(
    {"eval": dict(type="speech", pred="predict", batch_size=0, beam_width=0, num_examples=5)}
  )
  config.num_train_steps = 8000
  config.log_every_steps = 100
  config.eval_every_steps = 1000
  config.checkpoint.every_steps = 500
  return config


def get_sweep():
  """Two seeds (runs/speech_ctc/seed=K)."""
  return sweep.product(seed=range(2))
