"""The CTC trainer and the speech evaluator: the loss, greedy and beam-search decoding, word
errors, padding through the recogniser, the train step (loss goes down; jit and pmap agree), the
evaluator's numbers against direct computation, and (slow) a run through the trainer that lowers
the loss and resumes bit-identically after a halt.

Tiny sizes throughout: a recogniser of 4-channel convolutions and one BiLSTM of 8 units; the
evaluator's utterances (16 / 7 + 7) are synthesised by eSpeak NG once into the tests' cache (those
tests skip without `espeakng-loader`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import speech_ctc
from jaxvision import data, models, optim, parallel, transcripts
from jaxvision.config_dict import ConfigError
from jaxvision.data import espeak
from jaxvision.evaluators import common as evaluators_lib
from jaxvision.evaluators import speech as speech_evaluator
from jaxvision.tasks import ctc
from jaxvision.tasks.base import DataInfo
from jaxvision.train import loop, trainer
from jaxvision.workdir import restore_latest
from tests.train.test_classifier import read_jsonl

needs_espeak = pytest.mark.skipif(espeak.missing() is not None, reason=str(espeak.missing()))


def tiny_config(steps: int = 8, num_devices: int = 1, strategy: str = "jit"):
  """The experiment, shrunk: 16 train utterances, 7 + 7 eval, batch 8, a tiny recogniser."""
  config = speech_ctc.get_config()
  config.data.update(num_train=16, num_eval=7, num_eval_accent=7, batch_size=8, eval_batch_size=8)
  config.model.update(conv_features=(4, 4), hidden_size=8, num_layers=1)
  config.schedule.warmup_steps = 1
  config.num_train_steps = steps
  config.log_every_steps = 2
  config.eval_every_steps = config.checkpoint.every_steps = 4
  config.checkpoint.keep = 10
  config.evaluators.eval.num_examples = 2
  config.parallel.update(num_devices=num_devices, strategy=strategy)
  return config


def _path_logits(path, num_classes=11, peak=20.0):
  """Logits [1, T, K] whose every frame puts `peak` on the class `path` names there."""
  return jax.nn.one_hot(jnp.asarray(path)[None], num_classes) * peak


def test_ctc_loss_is_near_zero_for_a_perfect_prediction_and_large_for_a_wrong_one():
  targets = jnp.array([[3, 1, 1, -1]])  # words 3 1 1 -> classes 4 2 2
  logits = _path_logits([0, 4, 4, 2, 0, 2, 0])  # collapses to 4 2 2
  paddings = jnp.zeros((1, 7))
  perfect = float(ctc.ctc_loss(logits, paddings, targets)[0])
  assert abs(perfect) < 1e-3
  wrong = float(ctc.ctc_loss(logits, paddings, jnp.array([[5, 6, -1, -1]]))[0])
  assert wrong > 30.0
  # Without the blank between the repeated word, the path says "3 1": the target is unlikely.
  assert float(ctc.ctc_loss(_path_logits([0, 4, 2, 2, 0, 0, 0]), paddings, targets)[0]) > 10.0
  # Frames marked as padding change nothing, whatever their logits.
  garbage = jnp.concatenate([logits, jax.random.normal(jax.random.key(0), (1, 5, 11)) * 9], 1)
  padded = jnp.concatenate([paddings, jnp.ones((1, 5))], 1)
  assert float(ctc.ctc_loss(garbage, padded, targets)[0]) == pytest.approx(perfect, abs=1e-6)
  labels, label_paddings = ctc.ctc_labels(targets)
  np.testing.assert_array_equal(labels, [[4, 2, 2, 0]])
  np.testing.assert_array_equal(label_paddings, [[0, 0, 0, 1]])


def test_greedy_decoding_collapses_repeats_and_drops_blanks():
  path = [0, 3, 3, 0, 3, 5, 5, 0, 1, 1]
  logits = np.asarray(_path_logits(path)) + np.random.default_rng(0).normal(0, 1, (1, 10, 11))
  assert transcripts.greedy_decode(logits, [10]) == [[3, 3, 5, 1]]
  assert transcripts.greedy_decode(logits, [4]) == [[3]]  # only the real frames are read
  assert transcripts.collapse([0, 0, 0]) == [] and transcripts.collapse([2, 2, 2]) == [2]
  two = np.concatenate([logits, np.asarray(_path_logits([7] * 10))])
  assert transcripts.greedy_decode(two, [10, 3]) == [[3, 3, 5, 1], [7]]


def test_beam_search_sums_paths_where_the_best_path_misleads():
  # Two frames, P(blank) = 0.6 and P(a) = 0.4 each: the best path is "- -" (0.36), but "a" is
  # said by "a a", "a -" and "- a" (0.16 + 0.24 + 0.24 = 0.64).
  log_probs = np.log(np.array([[0.6, 0.4], [0.6, 0.4]]))
  assert transcripts.greedy_decode(log_probs[None], [2]) == [[]]
  assert transcripts.beam_search(log_probs, 2, beam_width=4) == [1]
  # On confident frames it agrees with the best path, repeats and all.
  sharp = np.asarray(jax.nn.log_softmax(_path_logits([0, 3, 3, 0, 3, 5, 0, 0])))[0]
  assert transcripts.beam_search(sharp, 8, beam_width=8) == [3, 3, 5]
  assert transcripts.beam_search(sharp, 3, beam_width=8) == [3]


def test_word_errors_count_substitutions_deletions_and_insertions():
  pairs = [
    ([1, 2, 3], [1, 2, 3], 0),
    ([1, 2, 3], [1, 3], 1),  # a deletion
    ([1, 2, 3], [1, 2, 4, 3], 1),  # an insertion
    ([1, 2, 3], [1, 9, 3], 1),  # a substitution
    ([1, 2, 3], [3, 2, 1], 2),
    ([], [4, 5], 2),
    ([4, 5], [], 2),
    ([7, 7, 7], [7], 2),
  ]
  for reference, hypothesis, errors in pairs:
    assert transcripts.word_errors(reference, hypothesis) == errors, (reference, hypothesis)
  references = [p[0] for p in pairs]
  hypotheses = [p[1] for p in pairs]
  assert transcripts.word_error_rate(references, hypotheses) == pytest.approx(11 / 20)


def _tiny_model():
  config = models.model_config("speech_bilstm", conv_features=(4, 4), hidden_size=8)
  return models.create_model(config, num_classes=11)


def test_a_padded_and_an_unpadded_utterance_give_the_same_logits():
  model = _tiny_model()
  rng = np.random.default_rng(0)
  alone = jnp.asarray(rng.normal(size=(1, 37, 40)), jnp.float32)
  variables = model.init(jax.random.key(0), alone, train=False)
  apply = jax.jit(lambda x, lengths: model.apply(variables, x, lengths=lengths, train=False))
  logits, paddings = apply(alone, None)
  assert logits.shape == (1, 10, 11) and not paddings.any()  # ceil(ceil(37 / 2) / 2) frames
  # In a batch of 64 frames with garbage past frame 37, beside a longer utterance.
  other = rng.normal(size=(64, 40))
  padded = np.stack([np.concatenate([alone[0], rng.normal(size=(27, 40)) * 5]), other])
  batch_logits, batch_paddings = apply(jnp.asarray(padded, jnp.float32), jnp.array([37, 64]))
  assert batch_logits.shape == (2, 16, 11)
  np.testing.assert_array_equal(batch_paddings[0], [0.0] * 10 + [1.0] * 6)
  np.testing.assert_array_equal(batch_paddings[1], 0.0)
  np.testing.assert_allclose(batch_logits[0, :10], logits[0], rtol=1e-5, atol=1e-5)
  assert models.speech.output_lengths(jnp.array([1, 2, 37, 64]), 2).tolist() == [1, 1, 10, 16]


def _batch(batch_size=8, frames=48, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(20, frames + 1, batch_size).astype(np.int32)
  real = np.arange(frames)[None, :, None] < lengths[:, None, None]
  inputs = (rng.normal(size=(batch_size, frames, 40)) * real).astype(np.float32)
  counts = rng.integers(1, 4, batch_size)
  targets = np.where(np.arange(3)[None] < counts[:, None], rng.integers(0, 10, (batch_size, 3)), -1)
  return {"inputs": inputs, "lengths": lengths, "targets": targets.astype(np.int32)}


def test_the_train_step_fits_a_batch_and_jit_and_pmap_agree():
  config = tiny_config()
  config.optimizer.learning_rate = 1e-2
  config.spec_augment.update(freq_masks=1, freq_width=4, time_masks=1, time_width=4)
  task = ctc.Task(config, DataInfo((48, 40), {"num_classes": 10}))
  state = jax.jit(task.init_state)(jax.random.key(0))
  batch, key = _batch(), jax.random.key(1)
  step = jax.jit(task.train_step)
  losses = []
  new_state = state
  for _ in range(12):
    new_state, metrics = step(new_state, batch, key)
    losses.append(float(metrics["train_loss"]))
  assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses
  # One step on 8 devices under pmap (masks drawn for the global batch) is the jit step.
  strategy = parallel.create_strategy(parallel.parallel_config(strategy="pmap"))
  if strategy.num_devices != 8:
    pytest.skip("needs the 8 virtual devices of tests/conftest.py")
  mapped = strategy.compile(lambda s, b, k: task.train_step(s, b, k, axis_name="data"))
  one, metrics_one = step(state, batch, key)
  eight, metrics_eight = mapped(strategy.place_state(state), strategy.place_batch(batch), key)
  assert float(strategy.fetch(metrics_eight)["train_loss"]) == pytest.approx(
    float(metrics_one["train_loss"]), rel=1e-5
  )
  for a, b in zip(
    jax.tree.leaves(one.params), jax.tree.leaves(strategy.global_state(eight).params), strict=True
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@needs_espeak
@pytest.mark.parametrize("beam_width", [0, pytest.param(4, marks=pytest.mark.slow)])
def test_evaluator_matches_direct_decoding_per_group(beam_width, capsys):
  config = tiny_config(num_devices=0, strategy="pmap")
  config.evaluators.eval.beam_width = beam_width
  dataset = data.load_dataset(config.data)
  strategy = parallel.create_strategy(config.parallel)
  task = ctc.Task(config, DataInfo.of(dataset), strategy.axis_name)
  state = jax.jit(task.init_state)(jax.random.key(0))
  # A few steps on the train split, so the decoded transcripts are not all empty.
  step = jax.jit(task.train_step)
  train = dataset.train.get(np.arange(8))
  for _ in range(6):
    state, _ = step(state, train, jax.random.key(1))
  context = evaluators_lib.Context(
    predict_fns=task.predict_fns(),
    dataset=dataset,
    strategy=strategy,
    workdir="",
    key=jax.random.key(2),
    batch_size=8,
    info=task.evaluator_info(),
  )
  (evaluator,) = evaluators_lib.from_config(config.evaluators, context)
  assert isinstance(evaluator, speech_evaluator.Evaluator)
  out = evaluator.run(strategy.place_state(state), step=6)
  assert set(out) == {spec.name for spec in evaluator.metrics}

  utterances = dataset.eval.get(np.arange(14))  # 7 held-out voices, then 7 held-out accent
  logits, paddings = jax.jit(ctc.predict)(state, utterances)
  frames = np.asarray((1 - paddings).sum(-1), int)
  if beam_width:
    log_probs = np.asarray(jax.nn.log_softmax(logits))
    decoded = [
      transcripts.beam_search(p, n, beam_width) for p, n in zip(log_probs, frames, strict=True)
    ]
  else:
    decoded = transcripts.greedy_decode(np.asarray(logits), frames)
  hypotheses = [[c - 1 for c in path] for path in decoded]
  references = [speech_evaluator.words(t) for t in utterances["targets"]]
  losses = np.asarray(ctc.ctc_loss(logits, paddings, utterances["targets"]))
  for prefix, rows in (("eval", slice(0, 7)), ("eval_accent", slice(7, 14))):
    refs, hyps = references[rows], hypotheses[rows]
    assert out[f"{prefix}_wer"] == pytest.approx(transcripts.word_error_rate(refs, hyps))
    exact = [r == h for r, h in zip(refs, hyps, strict=True)]
    assert out[f"{prefix}_string_accuracy"] == pytest.approx(np.mean(exact))
    assert out[f"{prefix}_digit_accuracy"] == float(exact[0])  # one 1-digit utterance per group
    assert out[f"{prefix}_loss"] == pytest.approx(float(losses[rows].mean()), rel=1e-4)
  printed = capsys.readouterr().out
  first = " ".join(map(str, references[0]))
  assert f"eval at step 6, voices: {first} -> " in printed and "eval at step 6, accent: " in printed


def test_config_errors_name_the_key():
  config = tiny_config()
  config.data = data.data_config("mnist1d")
  with pytest.raises(ConfigError, match="config.data.source must be one of"):
    ctc.validate(config, None)
  config = tiny_config()
  config.spec_augment.time_width = -1
  with pytest.raises(ConfigError, match="config.spec_augment.time_width=-1"):
    ctc.validate(config, None)
  config = tiny_config()
  config.spec_augment.vtlp = 0.7
  with pytest.raises(ConfigError, match=r"spec_augment.vtlp=0.7 must be a number in \[0, 0.5\)"):
    ctc.validate(config, None)
  config = speech_ctc.get_config()
  ctc.validate(config, None)
  assert speech_ctc.get_sweep() == [{"seed": 0}, {"seed": 1}]
  assert "augment" not in config and "label_smoothing" not in config
  tx, schedule = optim.create_optimizer(config.optimizer, config.schedule, config.num_train_steps)
  assert float(schedule(config.schedule.warmup_steps)) == pytest.approx(2e-3)


@needs_espeak
@pytest.mark.slow
def test_training_lowers_the_loss_and_a_halted_run_resumes_bit_identically(tmp_path):
  config = tiny_config(steps=8)
  config.optimizer.learning_rate = 1e-2
  straight = trainer.train_and_evaluate(config, str(tmp_path / "straight"))
  assert (straight.status, straight.step) == ("finished", 8)
  rows = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
  losses = [r["train_loss"] for r in rows if "train_loss" in r]
  assert len(losses) == 4 and losses[-1] < 0.8 * losses[0], losses
  halted = trainer.train_and_evaluate(
    config, str(tmp_path / "resumed"), loop.Options(halt_after_steps=3)
  )
  assert (halted.status, halted.step) == ("halted", 3)
  resumed = trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert resumed.final == straight.final
  a, _ = restore_latest(str(tmp_path / "straight"))
  b, _ = restore_latest(str(tmp_path / "resumed"))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
