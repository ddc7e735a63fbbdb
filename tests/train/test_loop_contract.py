"""Every trainer through the shared loop's contract: halt after 0 and after N steps, SIGTERM and
Ctrl-C, an exception inside the step (run closed, handlers restored), a NaN in any loss.

Tiny configs of 8 steps. The loop is written once, so one family proves each promise; the default
suite runs each promise for one family and each family's step through one or two promises (the
RNN's scanned multi-step calls under SIGTERM, the GAN's second loss going NaN, the video task
under Ctrl-C, every family's exception); the other combinations are marked slow.
"""

import json
import os
import signal

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import digits_cnn, mnist1d_rnn, mnist_dcgan
from jaxvision import data, models
from jaxvision.data import espeak, pipeline
from jaxvision.tasks import classification as classifier
from jaxvision.tasks import ctc, detection, gan, segmentation, video
from jaxvision.train import loop, trainer
from jaxvision.workdir import restore_latest
from tests.conftest import MNIST_FILES, mnist_dir
from tests.train.test_ctc import tiny_config as speech_tiny_config
from tests.train.test_detection import tiny_config as detection_tiny_config
from tests.train.test_segmentation import tiny_config as segmentation_tiny_config
from tests.train.test_video_training import tiny_config


def _short(config, steps=8):
  config.num_train_steps = steps
  config.log_every_steps = 2
  config.eval_every_steps = 4
  config.checkpoint.every_steps = 2
  config.checkpoint.keep = 10
  if "schedule" in config:
    config.schedule.warmup_steps = 1
  return config


def classifier_config():
  return _short(digits_cnn.get_config())


def rnn_config():
  config = _short(mnist1d_rnn.get_config("gru"))
  config.model.hidden_size = 8
  config.steps_per_call = 2
  return config


def gan_config():
  config = _short(mnist_dcgan.get_config("idx"))
  config.data = data.data_config("digits", normalize="symmetric", batch_size=32)
  config.generator = models.model_config("dcgan_generator", features=(16, 8))
  config.discriminator = models.model_config("dcgan_discriminator", features=(8, 16))
  config.z_dim = 8
  config.evaluators.eval.update(classifier_workdir="", batch_size=8, grid_size=8)
  return config


def video_config():
  """The frame predictor, tiny (32x32, 6 frames, 1 digit), on clips of the offline MNIST digits."""
  if not all((mnist_dir() / f).is_file() for f in MNIST_FILES):
    pytest.skip(f"offline MNIST IDX files not found in {mnist_dir()} (set JAXVISION_MNIST_DIR)")
  config = _short(tiny_config())
  config.data.update(eval_batch_size=8, num_eval=8)
  config.evaluators.eval.gif_clips = 0  # GIFs are tested in test_video_training
  return config


def ctc_config():
  """The CTC speech recogniser, tiny, on 16 utterances synthesised by eSpeak NG (cached)."""
  if espeak.missing():
    pytest.skip(espeak.missing())
  return _short(speech_tiny_config())


def segmentation_config():
  """The U-Net, tiny (3 levels of 8-32 channels), on 48x48 scenes of the offline MNIST digits."""
  if not all((mnist_dir() / f).is_file() for f in MNIST_FILES):
    pytest.skip(f"offline MNIST IDX files not found in {mnist_dir()} (set JAXVISION_MNIST_DIR)")
  config = _short(segmentation_tiny_config(mnist_dir()))
  config.evaluators.eval.png_scenes = 0
  return config


def detection_config():
  """CenterNet, tiny (2 stages of 8/16 channels), on 48x48 scenes of the offline MNIST digits."""
  config = _short(detection_tiny_config())
  config.evaluators.eval.png_scenes = 0  # PNGs are tested in test_detection
  return config


# Task module, config, the loss keys its step returns
TRAINERS = {
  "classifier": (classifier, classifier_config, ("train_loss",)),
  "rnn": (classifier, rnn_config, ("train_loss",)),
  "gan": (gan, gan_config, ("d_loss", "g_loss")),
  "video": (video, video_config, ("train_loss",)),
  "segmentation": (segmentation, segmentation_config, ("train_loss",)),
  "detection": (detection, detection_config, ("train_loss",)),
  "ctc": (ctc, ctc_config, ("train_loss",)),
}


def _cases(*names, default=(), signals=None):
  """Test parameters: each family name (with each signal name, if given), marked slow unless
  listed in `default` (CI runs the slow ones after the default suite)."""
  rows = [(n,) for n in names] if signals is None else [(n, s) for n in names for s in signals]
  return [
    pytest.param(*row, id="-".join(row), marks=() if row in default else pytest.mark.slow)
    for row in rows
  ]


FAMILIES = sorted(TRAINERS)


def _steps_saved(workdir):
  return sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())


@pytest.mark.parametrize("name", _cases(*FAMILIES, default=[("classifier",)]))
def test_halt_after_zero_and_n_steps_then_finish(name, tmp_path):
  module, make_config, _ = TRAINERS[name]
  config = make_config()
  outcome = trainer.train_and_evaluate(config, str(tmp_path), loop.Options(halt_after_steps=0))
  assert (outcome.status, outcome.step) == ("halted", 0)
  assert _steps_saved(tmp_path) == [0] and not (tmp_path / "results.json").exists()
  outcome = trainer.train_and_evaluate(config, str(tmp_path), loop.Options(halt_after_steps=3))
  assert (outcome.status, outcome.step) == ("halted", 3)
  assert 3 in _steps_saved(tmp_path)
  outcome = trainer.train_and_evaluate(config, str(tmp_path))
  assert (outcome.status, outcome.step) == ("finished", 8)
  assert json.loads((tmp_path / "results.json").read_text())["num_train_steps"] == 8
  steps = [json.loads(r)["step"] for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  train_rows = [s for s in steps if s % 2 == 0]
  assert train_rows == sorted(train_rows), "log rows in order, none repeated"


@pytest.mark.parametrize(
  "name,signame",
  _cases(
    *FAMILIES, signals=("SIGTERM", "SIGINT"), default=[("rnn", "SIGTERM"), ("video", "SIGINT")]
  ),
)
def test_a_signal_saves_at_the_next_step_and_stops(name, signame, tmp_path, monkeypatch):
  module, make_config, _ = TRAINERS[name]
  signum = signal.Signals[signame]
  original = pipeline.BatchSampler.indices

  def indices(self, step):  # the signal arrives while step 5 is being prepared
    if step == 4:
      os.kill(os.getpid(), signum)
    return original(self, step)

  monkeypatch.setattr(pipeline.BatchSampler, "indices", indices)
  handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
  config = make_config()
  config.data.prefetch = 0  # batches built between steps: the signal lands before step 5
  outcome = trainer.train_and_evaluate(config, str(tmp_path))
  # Stopped after the compiled call that ran step 5 (the RNN runs 2 steps per call).
  assert outcome.status == "preempted" and outcome.step == (6 if make_config is rnn_config else 5)
  assert _steps_saved(tmp_path)[-1] == outcome.step
  assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers


@pytest.mark.parametrize("name", FAMILIES)
def test_an_exception_in_the_step_closes_the_run(name, tmp_path, monkeypatch):
  module, make_config, _ = TRAINERS[name]

  def broken_step(*args, **kwargs):
    raise RuntimeError("broken step")

  monkeypatch.setattr(module, "train_step", broken_step)
  handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
  with pytest.raises(RuntimeError, match="broken step"):
    trainer.train_and_evaluate(make_config(), str(tmp_path))
  assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
  assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("name", _cases(*FAMILIES, default=[("gan",)]))
def test_a_nan_in_any_loss_stops_before_it_is_saved(name, tmp_path, monkeypatch):
  module, make_config, loss_keys = TRAINERS[name]
  original = module.train_step
  bad_key = loss_keys[-1]  # the last loss the step returns (g_loss for the GAN)

  def step_with_nan(state, *args, **kwargs):
    new_state, metrics = original(state, *args, **kwargs)
    nan_from_step_4 = jnp.where(state.step >= 4, jnp.nan, 1.0)  # step 5 on (steps done)
    return new_state, {**metrics, bad_key: metrics[bad_key] * nan_from_step_4}

  monkeypatch.setattr(module, "train_step", step_with_nan)
  with pytest.raises(FloatingPointError, match=f"non-finite {bad_key} .* at step 5"):
    trainer.train_and_evaluate(make_config(), str(tmp_path))
  assert _steps_saved(tmp_path)[-1] == 4  # the last good state, never a later one
  state, meta = restore_latest(str(tmp_path))
  assert meta["step"] == 4
  assert all(np.isfinite(x).all() for x in _leaves(state))


def _leaves(tree):
  if isinstance(tree, dict):
    for v in tree.values():
      yield from _leaves(v)
  elif hasattr(tree, "dtype") and np.issubdtype(tree.dtype, np.floating):
    yield np.asarray(tree)
