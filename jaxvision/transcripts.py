"""From per-frame CTC outputs to transcripts, and their errors (numpy, on the host).

CTC (Graves et al. 2006) scores every frame over the words plus a blank (class `BLANK` = 0, as
`optax.ctc_loss` has it); a frame path reads as a transcript by collapsing repeats and then
dropping blanks ("a a - a b" -> "a a b"). `greedy_decode` takes the best class of each frame;
`beam_search` is CTC prefix beam search (Hannun et al. 2014), which sums over the paths of each
prefix and so can find a likelier transcript than the single likeliest path. Transcripts are lists
of class ids; `word_errors` counts the substitutions, deletions and insertions (Levenshtein
distance) that turn a hypothesis into its reference, the numerator of the word error rate.
"""

from __future__ import annotations

import collections

import numpy as np

BLANK = 0


def collapse(path) -> list[int]:
  """A frame path [T] of class ids as a transcript: repeats merged, then blanks dropped."""
  out, previous = [], None
  for label in np.asarray(path).tolist():
    if label != previous and label != BLANK:
      out.append(label)
    previous = label
  return out


def greedy_decode(scores: np.ndarray, num_frames) -> list[list[int]]:
  """Best-path transcripts of scores [B, T, K] (logits or log-probabilities), each read over its
  first num_frames[b] frames."""
  best = np.argmax(np.asarray(scores), -1)  # [B, T]
  return [collapse(path[:n]) for path, n in zip(best, np.asarray(num_frames), strict=True)]


def _logsumexp(a: float, b: float) -> float:
  if a == -np.inf:
    return b
  if b == -np.inf:
    return a
  high = max(a, b)
  return high + float(np.log1p(np.exp(-abs(a - b))))


def beam_search(log_probs: np.ndarray, num_frames: int, beam_width: int = 8) -> list[int]:
  """The likeliest transcript found by CTC prefix beam search.

  Args:
    log_probs: per-frame log-probabilities [T, K] (log-softmax over the classes, blank at 0).
    num_frames: the real frames (the first ones) to read.
    beam_width: prefixes kept after each frame.

  Returns:
    The transcript (class ids, no blanks) with the highest total probability among the beam's.
  """
  # prefix -> (log P(prefix, path ends in a blank), log P(prefix, path ends in its last label))
  beams = {(): (0.0, -np.inf)}
  for frame in np.asarray(log_probs, np.float64)[:num_frames]:
    grown = collections.defaultdict(lambda: [-np.inf, -np.inf])
    for prefix, (blank, label) in beams.items():
      total = _logsumexp(blank, label)
      stay = grown[prefix]
      stay[0] = _logsumexp(stay[0], total + frame[BLANK])  # a blank keeps the prefix
      if prefix:  # the last label repeated (no blank between) keeps the prefix too
        stay[1] = _logsumexp(stay[1], label + frame[prefix[-1]])
      for k in range(len(frame)):
        if k == BLANK:
          continue
        longer = grown[(*prefix, k)]
        # after the same label without a blank between, a repeat needs a blank first
        came = blank if prefix and k == prefix[-1] else total
        longer[1] = _logsumexp(longer[1], came + frame[k])
    ranked = sorted(grown.items(), key=lambda item: -_logsumexp(*item[1]))
    beams = {prefix: tuple(scores) for prefix, scores in ranked[:beam_width]}
  return list(max(beams, key=lambda prefix: _logsumexp(*beams[prefix])))


def word_errors(reference, hypothesis) -> int:
  """The fewest substitutions, deletions and insertions turning `hypothesis` into `reference`."""
  reference, hypothesis = list(reference), list(hypothesis)
  previous = list(range(len(hypothesis) + 1))  # distances from the empty reference prefix
  for i, word in enumerate(reference, 1):
    current = [i]
    for j, guess in enumerate(hypothesis, 1):
      current.append(
        min(
          previous[j] + 1,  # the reference word deleted
          current[j - 1] + 1,  # a word inserted
          previous[j - 1] + (word != guess),  # substituted (or matched)
        )
      )
    previous = current
  return previous[-1]


def word_error_rate(references, hypotheses) -> float:
  """Word errors over every pair, per reference word (can exceed 1 with many insertions)."""
  errors = sum(word_errors(r, h) for r, h in zip(references, hypotheses, strict=True))
  words = sum(len(r) for r in references)
  return errors / max(words, 1)
