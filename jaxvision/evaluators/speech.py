"""Speech recognition: word error rate, string and single-digit accuracy per eval group.

Over the whole eval split (padded batches, masked), the trainer's `pred` function gives each
utterance's per-frame logits, decoded greedily (best path) or, with `beam_width` > 1, by CTC
prefix beam search (`jaxvision.transcripts`), and compared with its words. Per group of the eval
split (`info["groups"]`, e.g. "voices" and "accent" of `jaxvision.data.speech`): the word error
rate (word edits over reference words), the string accuracy (exact transcripts), the single-digit
accuracy (exact transcripts of the one-word utterances; NaN without any) and the mean CTC loss.
The first group's metrics are `<name>_wer`, ...; another group's `<name>_<group>_wer`, ....
Every evaluation prints the first `num_examples` utterances of each group, reference -> decoded.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxvision import transcripts
from jaxvision.evaluators.common import MetricSpec, rows_over_split
from jaxvision.tasks import ctc

STATS = ("errors", "words", "exact", "strings", "single_exact", "singles", "loss")


def eval_step(state, batch, *, predict_fn, beam: bool, axis_name=None) -> dict:
  """Per-utterance outputs of a batch (rows split like the batch): "scores" [B, T', K] (argmax
  class ids [B, T'] when not `beam`, else log-probabilities), "num_frames" [B], "loss" [B] (CTC),
  and the batch's "targets", "group" and "mask" passed through."""
  del axis_name  # per-utterance outputs: nothing to reduce across devices
  logits, paddings = predict_fn(state, batch)
  scores = jax.nn.log_softmax(logits) if beam else logits.argmax(-1)
  return {
    "scores": scores,
    "num_frames": (1.0 - paddings).sum(-1).astype(np.int32),
    "loss": ctc.ctc_loss(logits, paddings, batch["targets"]),
    "targets": batch["targets"],
    "group": batch["group"] if "group" in batch else 0 * batch["lengths"],
    "mask": batch["mask"],
  }


def decode(outputs: dict, beam_width: int) -> list[list[int]]:
  """Word transcripts (class - 1) of `eval_step`'s fetched outputs."""
  scores, frames = outputs["scores"], outputs["num_frames"]
  if beam_width > 1:
    paths = [transcripts.beam_search(s, n, beam_width) for s, n in zip(scores, frames, strict=True)]
  else:
    paths = [transcripts.collapse(s[:n]) for s, n in zip(scores, frames, strict=True)]
  return [[label - 1 for label in path] for path in paths]


def words(targets: np.ndarray) -> list[int]:
  """The word ids of one padded target row (-1 ends them)."""
  row = np.asarray(targets).tolist()
  return row[: row.index(-1)] if -1 in row else row


def spoken(ids) -> str:
  return " ".join(str(i) for i in ids) or "(nothing)"


class Evaluator:
  """Word error rate, string and single-digit accuracy and CTC loss per eval group.

  Settings (`config.evaluators.<name>`):
    pred: the trainer's prediction function (default "predict").
    batch_size: utterances per eval batch (0: `config.data.eval_batch_size`).
    beam_width: CTC prefix beam search with this many prefixes; 0 or 1: greedy decoding.
    num_examples: utterances of each group printed, reference -> decoded, per evaluation.
  """

  def __init__(
    self,
    name: str,
    context,
    *,
    pred: str = "predict",
    batch_size: int = 0,
    beam_width: int = 0,
    num_examples: int = 5,
  ):
    strategy = context.strategy
    self._name, self._strategy = name, strategy
    self._source = context.dataset.eval
    self._groups = list(context.dataset.info.get("groups", ["eval"]))
    self._batch_size = batch_size or context.batch_size
    strategy.check_batch_size(self._batch_size, f"evaluators.{name}.batch_size")
    if beam_width < 0 or num_examples < 0:
      raise ValueError(f"evaluators.{name}: beam_width and num_examples must be >= 0")
    self._beam_width, self._num_examples = beam_width, num_examples
    predict_fn = context.predict_fns[pred]
    self._step = strategy.compile(
      lambda state, batch: eval_step(
        state, batch, predict_fn=predict_fn, beam=beam_width > 1, axis_name=strategy.axis_name
      ),
      compiler_options=context.compiler_options,
    )
    self.metrics = ()
    for group in self._groups:
      prefix, where = self._prefix(group), self._where(group)
      self.metrics += (
        MetricSpec(f"{prefix}_wer", f"WER{where}", "percent", "lower"),
        MetricSpec(f"{prefix}_string_accuracy", f"string accuracy{where}", "percent", "higher"),
        MetricSpec(
          f"{prefix}_digit_accuracy", f"single-digit accuracy{where}", "percent", "higher"
        ),
        MetricSpec(f"{prefix}_loss", f"CTC loss{where}", "float", "lower"),
      )

  def _prefix(self, group: str) -> str:
    return self._name if group == self._groups[0] else f"{self._name}_{group}"

  def _where(self, group: str) -> str:
    return f" ({group})" if len(self._groups) > 1 else ""

  def provenance(self) -> dict:
    return {
      "decoding": f"beam search, width {self._beam_width}" if self._beam_width > 1 else "greedy"
    }

  def run(self, state, step: int) -> dict:
    totals = {group: dict.fromkeys(STATS, 0.0) for group in self._groups}
    examples = {group: [] for group in self._groups}
    for outputs in rows_over_split(
      self._step, state, self._source, self._batch_size, self._strategy
    ):  # every host: the whole batch's real utterances
      for target, hypothesis, group, loss in zip(
        outputs["targets"],
        decode(outputs, self._beam_width),
        outputs["group"],
        outputs["loss"],
        strict=True,
      ):
        reference, name = words(target), self._groups[int(group)]
        sums = totals[name]
        sums["errors"] += transcripts.word_errors(reference, hypothesis)
        sums["words"] += len(reference)
        sums["exact"] += reference == hypothesis
        sums["strings"] += 1
        sums["single_exact"] += len(reference) == 1 and reference == hypothesis
        sums["singles"] += len(reference) == 1
        sums["loss"] += float(loss)
        if len(examples[name]) < self._num_examples:
          examples[name].append(f"{spoken(reference)} -> {spoken(hypothesis)}")
    if self._num_examples and jax.process_index() == 0:
      for group, lines in examples.items():
        print(f"{self._name} at step {step}, {group}: " + "; ".join(lines), flush=True)
    out = {}
    for group, sums in totals.items():
      prefix = self._prefix(group)
      out[f"{prefix}_wer"] = sums["errors"] / max(sums["words"], 1)
      out[f"{prefix}_string_accuracy"] = sums["exact"] / max(sums["strings"], 1)
      singles = sums["singles"]
      out[f"{prefix}_digit_accuracy"] = sums["single_exact"] / singles if singles else float("nan")
      out[f"{prefix}_loss"] = sums["loss"] / max(sums["strings"], 1)
    return out
