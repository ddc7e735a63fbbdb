"""Spoken digit strings synthesised offline by eSpeak NG, as log-mel features, with held-out voices.

An utterance is a string of `min_digits`..`max_digits` digits spoken as words ("zero".."nine";
a 0 is "oh" with probability `oh_prob`) by one voice: an English accent (`ACCENTS`) and one of
eSpeak NG's voice variants ("m1", "f3", "klatt", "whisper", ...), at a random speed, pitch,
pitch range and pause between words, with silence before and after, a random gain (which the
per-utterance normalisation removes again, but for the log floor), and white, pink or brown
background noise at a random SNR (the SNR is over the whole band, and brown noise's power lies
mostly below the mel bands' 20 Hz floor, so brown-noise utterances are nearly clean; white and
pink noise mask the words). Every choice comes from `np.random.default_rng([seed, index])`
and the synthesizer is deterministic (`jaxvision.data.espeak`), so an utterance is a pure
function of (seed, index). Train utterances use seed 2 * seed, eval utterances 2 * seed + 1.

Held out: the variants are grouped into families by name ("m1".."m8" are one family, "klatt"..
"klatt6" another) and every `heldout_voices_every`-th family in name order is never heard in
training, nor is the accent `heldout_accent`. The eval split has two groups, named in
`info["groups"]`: "voices" (the first `num_eval` utterances: held-out voices in the training
accents) and "accent" (the next `num_eval_accent`: held-out voices in the held-out accent). A
family is drawn uniformly, then a variant of it. Lengths are balanced: the utterance at position
p of the train split or of an eval group has min_digits + p % (max_digits - min_digits + 1)
digits, so every eval group holds as many utterances of each length; `train_digit_counts` sets
another cycle for the train split alone, and `train_oh_prob` another chance of "oh" (the same
utterances otherwise: the draw that decides it is made whatever the chance).

An example: `inputs` [T, n_mels] float32 log-mel frames (`jaxvision.data.audio`, 25 ms every
10 ms by default, each band normalised over the utterance, zero beyond its real frames),
`lengths` [] int32 the real frames, `targets` [max_digits] int32 the digits 0-9 padded with -1
(`PAD`); eval examples also have `group` [] int32 (0: voices, 1: accent). T is the longest
utterance of either split, rounded up to a multiple of 16. `info["num_classes"]` is 10 (the
digit words; a CTC model adds its blank).

Features are made once per split and cached (`jaxvision.data.cache`) under a name holding the
split, its size, the eSpeak NG version and a hash of every other key of `DEFAULTS` and of
`FORMAT`: ~12 MB per 1,000 utterances (ragged, float16), made at 33 ms per utterance on a busy
2-core machine (a third of it synthesis; 2,000 utterances in 66 s): the default 24,200 take
about 13 minutes, once.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from jaxvision.data import audio, base, cache, espeak

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PAD = -1  # targets beyond an utterance's digits
ACCENTS = (
  "en",
  "en-us",
  "en-gb-x-rp",
  "en-gb-scotland",
  "en-gb-x-gbclan",
  "en-gb-x-gbcwmd",
  "en-us-nyc",
  "en-029",
)
# Variants that set their own slow tempo (1.3-1.5x the others' durations at the same rate).
SLOW_VARIANTS = ("AnxiousAndy", "Marco")
GROUPS = ("voices", "accent")  # the eval split's groups, in order
NOISE_EXPONENTS = (0.0, 1.0, 2.0)  # white, pink, brown

DEFAULTS = dict(
  seed=0,  # train utterances use seed 2 * seed, eval utterances 2 * seed + 1
  num_train=20_000,
  num_eval=2_800,  # group "voices": held-out voices, training accents
  num_eval_accent=1_400,  # group "accent": held-out voices in heldout_accent (0: no group)
  min_digits=1,
  max_digits=7,
  # the digits per training utterance, cycled over its positions (e.g. (1, 1, 2, 3, 4, 5, 6, 7):
  # a quarter isolated words); empty: balanced as the eval groups are
  train_digit_counts=(),
  oh_prob=0.3,  # chance that a 0 is said "oh" (else "zero")
  train_oh_prob=None,  # the same chance in the train split alone; None: oh_prob
  heldout_accent="en-gb-scotland",  # one of ACCENTS, never heard in training
  heldout_voices_every=4,  # families [k-1::k] of the variants (by name) are held out
  min_rate=140,  # speaking rate in words per minute, uniform in [min_rate, max_rate]
  max_rate=220,
  min_pitch=25,  # eSpeak NG pitch (0-100, 50 the voice's own), uniform integers
  max_pitch=75,
  min_pitch_range=25,  # intonation range (0-100), uniform integers
  max_pitch_range=75,
  max_word_gap=3,  # extra pause between words in 10 ms units, uniform in 0..this
  max_silence=0.25,  # seconds of silence before and after the speech, each uniform in 0..this
  min_gain_db=-10.0,  # waveform gain, uniform
  max_gain_db=10.0,
  min_snr_db=10.0,  # background noise (white, pink or brown) at an SNR uniform in this range
  max_snr_db=30.0,
  n_mels=40,  # log-mel bands
  frame_ms=25.0,  # analysis window
  hop_ms=10.0,  # frame step
)
OPTIONAL = {"train_oh_prob": float}  # keys unset by default (see `jaxvision.data.data_config`)
_COUNTS = ("num_train", "num_eval", "num_eval_accent")
# Keys only the train split depends on, hashed into its cache name alone, and only when set
# (added after caches existed: at their default the names stay as they were).
_TRAIN_ONLY = ("train_digit_counts", "train_oh_prob")
FORMAT = 1  # of the cached arrays: raised whenever the code makes other features from a config


def family(variant: str) -> str:
  """A variant's family: its name without trailing digits, lower case ("Gene2" -> "gene")."""
  return variant.rstrip("0123456789").lower()


def voice_families(every: int) -> tuple[dict, dict]:
  """(training, held-out) families {family: [variants]} of the installed variants (less
  `SLOW_VARIANTS`): the held-out ones are every `every`-th family in name order."""
  families = {}
  for variant in espeak.variants():
    if variant not in SLOW_VARIANTS:
      families.setdefault(family(variant), []).append(variant)
  names = sorted(families)
  heldout = set(names[every - 1 :: every])
  split = lambda keep: {f: families[f] for f in names if (f in heldout) == keep}
  return split(False), split(True)


def words(digits, oh: np.ndarray | None = None) -> list[str]:
  """The words of `digits` (PAD ends them); a 0 is "oh" where `oh` is set."""
  out = []
  for i, d in enumerate(digits):
    if d == PAD:
      break
    out.append("oh" if d == 0 and oh is not None and oh[i] else DIGIT_WORDS[d])
  return out


def validate(config) -> None:
  """Checks the keys of `DEFAULTS` in `config`; raises ValueError naming the key."""
  if not 1 <= config.min_digits <= config.max_digits:
    raise ValueError(
      f"need 1 <= data.min_digits <= data.max_digits, got {config.min_digits}, {config.max_digits}"
    )
  if config.heldout_accent not in ACCENTS:
    raise ValueError(f"data.heldout_accent={config.heldout_accent!r} not in {ACCENTS}")
  if config.heldout_voices_every < 2:
    raise ValueError(f"data.heldout_voices_every={config.heldout_voices_every} must be >= 2")
  if config.num_train <= 0 or config.num_eval <= 0 or config.num_eval_accent < 0:
    raise ValueError("speech needs data.num_train, data.num_eval > 0 and num_eval_accent >= 0")
  limits = {"rate": (80, 450), "pitch": (0, 100), "pitch_range": (0, 100)}
  for name in ("rate", "pitch", "pitch_range", "gain_db", "snr_db"):
    low, high = config[f"min_{name}"], config[f"max_{name}"]
    lowest, highest = limits.get(name, (-np.inf, np.inf))
    if not lowest <= low <= high <= highest:
      raise ValueError(
        f"data.min_{name}={low}, data.max_{name}={high}: need min <= max, within "
        f"[{lowest}, {highest}]"
      )
  counts = tuple(config.train_digit_counts)
  if not all(config.min_digits <= n <= config.max_digits for n in counts):
    raise ValueError(
      f"data.train_digit_counts={counts}: each must be in [data.min_digits, data.max_digits] = "
      f"[{config.min_digits}, {config.max_digits}]"
    )
  if not 0.0 <= config.oh_prob <= 1.0:
    raise ValueError(f"data.oh_prob={config.oh_prob} must be in [0, 1]")
  if config.train_oh_prob is not None and not 0.0 <= config.train_oh_prob <= 1.0:
    raise ValueError(f"data.train_oh_prob={config.train_oh_prob} must be in [0, 1] (or unset)")
  if config.max_word_gap < 0 or config.max_silence < 0:
    raise ValueError("data.max_word_gap and data.max_silence must be >= 0")


class UtteranceMaker:
  """`maker(seed, index)`: the example (seed, index) of one split ("train" or "eval").

  Attributes:
    groups: the split's groups as (name, first index, size, accents, families).
  """

  def __init__(self, config, split: str):
    if split not in ("train", "eval"):
      raise ValueError(f"unknown speech split {split!r}; expected train or eval")
    validate(config)
    self.config, self.split = config, split
    train_families, heldout_families = voice_families(config.heldout_voices_every)
    train_accents = tuple(a for a in ACCENTS if a != config.heldout_accent)
    if split == "train":
      self.groups = [("train", 0, config.num_train, train_accents, train_families)]
    else:
      self.groups = [("voices", 0, config.num_eval, train_accents, heldout_families)]
      if config.num_eval_accent:
        accent = (config.heldout_accent,)
        self.groups.append(
          ("accent", config.num_eval, config.num_eval_accent, accent, heldout_families)
        )

  def __len__(self) -> int:
    return sum(size for _, _, size, _, _ in self.groups)

  def sample(self, seed: int, index: int) -> dict:
    """The random choices of utterance (seed, index).

    Returns:
      dict with `digits` [n] int, `oh` [n] bool (a 0 said "oh"), `text`, `group` (index into
      the split's groups), `accent`, `variant`, `voice` ("accent+variant"), `rate`, `pitch`,
      `pitch_range`, `word_gap`, `silence` (seconds before, after), `gain_db`, `snr_db`,
      `noise_exponent`, and the seeds of the synthesizer and the noise.
    """
    c = self.config
    if not 0 <= index < len(self):
      raise IndexError(f"utterance {index} outside the {self.split} split of {len(self)}")
    group = max(g for g, (_, start, _, _, _) in enumerate(self.groups) if index >= start)
    _, start, _, accents, families = self.groups[group]
    rng = np.random.default_rng([seed, index])
    if self.split == "train" and c.train_digit_counts:
      count = c.train_digit_counts[(index - start) % len(c.train_digit_counts)]
    else:
      count = c.min_digits + (index - start) % (c.max_digits - c.min_digits + 1)
    digits = rng.integers(0, 10, count)
    oh_prob = c.oh_prob if self.split != "train" or c.train_oh_prob is None else c.train_oh_prob
    oh = (digits == 0) & (rng.random(count) < oh_prob)
    accent = accents[rng.integers(len(accents))]
    members = families[sorted(families)[rng.integers(len(families))]]
    variant = members[rng.integers(len(members))]
    return dict(
      digits=digits,
      oh=oh,
      text=" ".join(words(digits, oh)),
      group=group,
      accent=accent,
      variant=variant,
      voice=f"{accent}+{variant}",
      rate=int(rng.integers(c.min_rate, c.max_rate + 1)),
      pitch=int(rng.integers(c.min_pitch, c.max_pitch + 1)),
      pitch_range=int(rng.integers(c.min_pitch_range, c.max_pitch_range + 1)),
      word_gap=int(rng.integers(0, c.max_word_gap + 1)),
      silence=tuple(rng.uniform(0.0, c.max_silence, 2)),
      gain_db=float(rng.uniform(c.min_gain_db, c.max_gain_db)),
      snr_db=float(rng.uniform(c.min_snr_db, c.max_snr_db)),
      noise_exponent=NOISE_EXPONENTS[rng.integers(len(NOISE_EXPONENTS))],
      synth_seed=int(rng.integers(1, 2**31 - 1)),
      noise_seed=int(rng.integers(0, 2**63 - 1)),
    )

  def waveform(self, spec: dict) -> tuple[np.ndarray, int]:
    """(samples [N] float64, sample rate) of an utterance's choices (`sample`)."""
    speech, rate_hz = espeak.synthesize(
      spec["text"],
      spec["voice"],
      rate=spec["rate"],
      pitch=spec["pitch"],
      pitch_range=spec["pitch_range"],
      word_gap=spec["word_gap"],
      seed=spec["synth_seed"],
    )
    speech = speech.astype(np.float64) / 32768.0 * 10.0 ** (spec["gain_db"] / 20.0)
    before, after = (np.zeros(round(s * rate_hz)) for s in spec["silence"])
    signal = np.concatenate([before, speech, after])
    noise = audio.colored_noise(
      np.random.default_rng(spec["noise_seed"]), len(signal), spec["noise_exponent"]
    )
    power = float(np.mean(speech**2)) if len(speech) else 1e-8
    return audio.add_noise(signal, noise, spec["snr_db"], power), rate_hz

  def __call__(self, seed: int, index: int) -> dict[str, np.ndarray]:
    """{"features" [T, n_mels] float32 (normalised), "targets" [max_digits] int32, "group" []}."""
    spec = self.sample(seed, index)
    signal, rate_hz = self.waveform(spec)
    c = self.config
    features = audio.log_mel(signal, rate_hz, n_mels=c.n_mels, frame_ms=c.frame_ms, hop_ms=c.hop_ms)
    targets = np.full(c.max_digits, PAD, np.int32)
    targets[: len(spec["digits"])] = spec["digits"]
    return {
      "features": audio.normalize(features),
      "targets": targets,
      "group": np.asarray(spec["group"], np.int32),
    }


def cache_name(config, split: str) -> str:
  """The cache file of a split: its size, the eSpeak NG version, a hash of every other key."""
  keys = {k: config[k] for k in sorted(DEFAULTS) if k not in (*_COUNTS, *_TRAIN_ONLY)}
  if split == "train":
    if config.train_digit_counts:
      keys["train_digit_counts"] = list(config.train_digit_counts)
    if config.train_oh_prob is not None:
      keys["train_oh_prob"] = config.train_oh_prob
  keys["variants"], keys["format"] = list(espeak.variants()), FORMAT
  digest = hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]
  size = config.num_train if split == "train" else f"{config.num_eval}+{config.num_eval_accent}"
  return f"speech-{split}{size}-espeak{espeak.version()}-{digest}"


def make_split(maker: UtteranceMaker, seed: int) -> dict[str, np.ndarray]:
  """Every utterance of a split, ragged: `frames` [sum of T, n_mels] float16, `lengths` [N],
  `targets` [N, max_digits], `group` [N]."""
  began = time.time()
  print(f"speech: synthesising {len(maker)} {maker.split} utterances (cached after)", flush=True)
  examples = []
  for i in range(len(maker)):
    examples.append(maker(seed, i))
    if (i + 1) % 5000 == 0 and i + 1 < len(maker):
      print(f"speech: {i + 1} in {time.time() - began:.0f} s", flush=True)
  print(f"speech: {len(maker)} {maker.split} utterances in {time.time() - began:.0f} s", flush=True)
  return {
    "frames": np.concatenate([e["features"] for e in examples]).astype(np.float16),
    "lengths": np.array([len(e["features"]) for e in examples], np.int32),
    "targets": np.stack([e["targets"] for e in examples]).astype(np.int8),
    "group": np.array([e["group"] for e in examples], np.int8),
  }


class UtteranceSource:
  """A split's utterances held ragged in memory, read zero-padded to `max_frames` frames."""

  def __init__(self, arrays: dict, max_frames: int, keys: tuple[str, ...] = ()):
    self._frames, self._lengths = arrays["frames"], arrays["lengths"]
    self._targets = arrays["targets"].astype(np.int32)
    self._offsets = np.concatenate([[0], np.cumsum(self._lengths)])
    self._extra = {k: arrays[k].astype(np.int32) for k in keys}
    self.max_frames = max_frames

  def __len__(self) -> int:
    return len(self._lengths)

  def get(self, indices: np.ndarray) -> base.Batch:
    indices = np.asarray(indices).reshape(-1)
    inputs = np.zeros((len(indices), self.max_frames, self._frames.shape[1]), np.float32)
    for row, i in enumerate(indices):
      inputs[row, : self._lengths[i]] = self._frames[self._offsets[i] : self._offsets[i + 1]]
    batch = {
      "inputs": inputs,
      "lengths": self._lengths[indices],
      "targets": self._targets[indices],
    }
    return {**batch, **{k: v[indices] for k, v in self._extra.items()}}


def load(config) -> base.Dataset:
  """The train split and the eval split (groups "voices" and "accent"), made or read from the
  cache; see the module docstring."""
  validate(config)
  makers = {split: UtteranceMaker(config, split) for split in ("train", "eval")}
  seeds = {"train": 2 * config.seed, "eval": 2 * config.seed + 1}
  arrays = {
    split: cache.load_or_make(
      cache_name(config, split), lambda split=split: make_split(makers[split], seeds[split])
    )
    for split in makers
  }
  longest = max(int(a["lengths"].max()) for a in arrays.values())
  max_frames = -(-longest // 16) * 16
  train_families, heldout_families = voice_families(config.heldout_voices_every)
  count = lambda families: sum(len(v) for v in families.values())
  groups = [name for name, _, _, _, _ in makers["eval"].groups]
  accent = (
    f" + {config.num_eval_accent} in held-out {config.heldout_accent}"
    if config.num_eval_accent
    else ""
  )
  return base.Dataset(
    name="speech",
    train=UtteranceSource(arrays["train"], max_frames),
    eval=UtteranceSource(arrays["eval"], max_frames, keys=("group",)),
    description=(
      f"speech (eSpeak NG {espeak.version()}; {config.min_digits}-{config.max_digits} digits, "
      f"SNR {config.min_snr_db:g}-{config.max_snr_db:g} dB, {config.n_mels} log-mel bands; "
      f"train: {count(train_families)} voices x {len(ACCENTS) - 1} accents, eval: "
      f"{count(heldout_families)} held-out voices) {config.num_train} / {config.num_eval}{accent}"
    ),
    info={
      "num_classes": len(DIGIT_WORDS),
      "groups": groups,
      "max_digits": config.max_digits,
      "hop_ms": config.hop_ms,
    },
  )
