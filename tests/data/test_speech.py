"""The speech source: utterances as pure functions of (seed, index), eval voices and accent never
heard in training, log-mel features, noise, SpecAugment on device, and the on-disk cache.

Tests that synthesise skip when eSpeak NG (`pip install espeakng-loader`) is absent; the tiny
splits they make take a few seconds and are cached under the tests' cache folder.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxvision import data as data_lib
from jaxvision import workdir
from jaxvision.data import audio, espeak, speech

needs_espeak = pytest.mark.skipif(espeak.missing() is not None, reason=str(espeak.missing()))


def _config(**changes) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({**speech.DEFAULTS, **changes})


def tiny_config(**changes) -> ml_collections.ConfigDict:
  """16 train utterances, 7 of held-out voices and 7 in the held-out accent."""
  return _config(**{"num_train": 16, "num_eval": 7, "num_eval_accent": 7, **changes})


@needs_espeak
def test_choices_are_pure_and_eval_voices_and_accent_are_never_trained_on():
  config = _config()
  train, eval_ = speech.UtteranceMaker(config, "train"), speech.UtteranceMaker(config, "eval")
  first, again = train.sample(0, 17), train.sample(0, 17)
  assert first["text"] == again["text"] and first["voice"] == again["voice"]
  assert first["snr_db"] == again["snr_db"] and first["synth_seed"] == again["synth_seed"]
  assert train.sample(0, 18)["synth_seed"] != first["synth_seed"]
  assert train.sample(2, 17)["synth_seed"] != first["synth_seed"]  # another seed, another draw

  trained = [train.sample(0, i) for i in range(3000)]
  evaluated = [eval_.sample(1, i) for i in range(len(eval_))]
  voices = [s for s in evaluated if s["group"] == 0]
  accent = [s for s in evaluated if s["group"] == 1]
  assert (len(voices), len(accent)) == (config.num_eval, config.num_eval_accent)
  variants = lambda specs: {s["variant"] for s in specs}
  families = lambda specs: {speech.family(s["variant"]) for s in specs}
  assert not variants(trained) & variants(evaluated)
  assert not families(trained) & families(evaluated)
  train_families, heldout_families = speech.voice_families(config.heldout_voices_every)
  assert families(trained) == set(train_families) and families(evaluated) == set(heldout_families)
  assert len(variants(trained)) > 50 and len(variants(evaluated)) > 15
  assert config.heldout_accent not in {s["accent"] for s in trained + voices}
  assert {s["accent"] for s in accent} == {config.heldout_accent}
  assert len({s["accent"] for s in trained}) == len(speech.ACCENTS) - 1
  # Balanced lengths: each group holds as many utterances of each length.
  for group in (voices, accent):
    counts = np.bincount([len(s["digits"]) for s in group], minlength=8)[1:]
    assert (counts == len(group) // 7).all(), counts
  # The words: a 0 is sometimes "oh", never another digit.
  texts = " ".join(s["text"] for s in trained[:500]).split()
  assert {"oh", "zero"} <= set(texts) <= set(speech.DIGIT_WORDS) | {"oh"}
  snrs = [s["snr_db"] for s in trained]
  assert config.min_snr_db <= min(snrs) and max(snrs) <= config.max_snr_db


def test_log_mel_of_a_tone_peaks_in_its_band_and_counts_its_frames():
  rate, hz = 16000, 1000.0
  tone = np.sin(2 * np.pi * hz * np.arange(rate) / rate)  # 1 s
  features = audio.log_mel(tone, rate, n_mels=40, frame_ms=25.0, hop_ms=10.0)
  assert features.shape == (audio.frame_count(rate, rate, 25.0, 10.0), 40) == (98, 40)
  assert features.dtype == np.float32
  bank = audio.mel_filterbank(rate, 512, 40)  # [257, 40]
  bins = np.fft.rfftfreq(512, 1 / rate)
  centres = bins[bank.argmax(0)]
  peak = int(np.argmax(features.mean(0)))
  assert abs(centres[peak] - hz) == np.abs(centres - hz).min()  # the band nearest 1 kHz
  normalized = audio.normalize(np.random.default_rng(0).normal(3.0, 2.0, (50, 40)))
  np.testing.assert_allclose(normalized.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(normalized.std(0), 1.0, atol=1e-4)
  assert audio.log_mel(np.zeros(100), rate).shape == (1, 40)  # shorter than a window: one frame


def test_noise_is_unit_rms_coloured_and_mixed_at_the_asked_snr():
  rng = np.random.default_rng(0)
  white, brown = (audio.colored_noise(rng, 20_000, e) for e in (0.0, 2.0))
  for noise in (white, brown):
    assert noise.shape == (20_000,) and np.sqrt(np.mean(noise**2)) == pytest.approx(1.0, rel=1e-6)
  low = lambda x: np.sum(np.abs(np.fft.rfft(x))[1:200] ** 2) / np.sum(np.abs(np.fft.rfft(x)) ** 2)
  assert low(brown) > 0.5 > 0.05 > low(white)  # brown noise's power sits at low frequencies
  signal = np.sin(np.arange(20_000) / 5.0)
  power = float(np.mean(signal**2))
  mixed = audio.add_noise(signal, white, 20.0, power)
  snr = 10 * np.log10(power / np.mean((mixed - signal) ** 2))
  assert snr == pytest.approx(20.0, abs=1e-6)


def _masked(x, lengths, key, axis_name=None):
  return audio.spec_augment(
    key, x, lengths, freq_masks=2, freq_width=5, time_masks=2, time_width=6, axis_name=axis_name
  )


def test_spec_augment_masks_bands_and_real_frames_only_and_alike_under_pmap():
  batch, frames, bands = 8, 30, 16
  lengths = jnp.array([30, 25, 20, 12, 8, 30, 3, 17], jnp.int32)
  real = jnp.arange(frames)[None, :, None] < lengths[:, None, None]
  x = jnp.where(real, 1.0, 7.0) * jnp.ones((batch, frames, bands))  # 7: padding
  key = jax.random.key(0)
  out = np.asarray(_masked(x, lengths, key))
  np.testing.assert_array_equal(out[~np.asarray(real)[..., 0]], 7.0)  # the padding is untouched
  assert set(np.unique(out)) <= {0.0, 1.0, 7.0} and (out == 0).any()
  masked_bands = masked_frames = 0
  for row, length in zip(out, np.asarray(lengths), strict=True):
    zero = row[:length] == 0
    bands_zero, frames_zero = zero.all(0), zero.all(1)  # masked over every frame / band
    if frames_zero.all():  # time masks covered a short utterance: no band can be told masked
      continue
    assert bands_zero.sum() <= 2 * 5 and frames_zero.sum() <= 2 * 6
    assert (zero <= (bands_zero[None] | frames_zero[:, None])).all()  # no other zeros
    masked_bands, masked_frames = masked_bands + bands_zero.sum(), masked_frames + frames_zero.sum()
  assert masked_bands > 0 and masked_frames > 0
  np.testing.assert_array_equal(out, np.asarray(_masked(x, lengths, key)))  # a key: one draw
  assert not np.array_equal(out, np.asarray(_masked(x, lengths, jax.random.key(1))))
  assert audio.spec_augment(key, x, lengths) is x  # no masks asked: unchanged
  # Under pmap each device masks its rows as the global batch's draw says.
  devices = jax.local_device_count()
  if batch % devices == 0 and devices > 1:
    split = lambda a: a.reshape(devices, batch // devices, *a.shape[1:])
    mapped = jax.pmap(lambda x, lengths: _masked(x, lengths, key, "data"), axis_name="data")(
      split(x), split(lengths)
    )
    np.testing.assert_array_equal(np.asarray(mapped).reshape(out.shape), out)


def test_vtlp_stretches_each_utterances_bands_and_keeps_the_masks_draws():
  bands = 8
  x = jnp.broadcast_to(jnp.arange(bands, dtype=jnp.float32), (3, 5, bands))  # value = band
  out = np.asarray(audio.warp_bands(x, jnp.array([1.0, 0.5, 1.5])))
  np.testing.assert_allclose(out[0], x[0])  # factor 1: unchanged
  np.testing.assert_allclose(out[1, 0], 0.5 * np.arange(bands))  # band b reads band b / 2
  np.testing.assert_allclose(out[2, 0], np.minimum(1.5 * np.arange(bands), bands - 1))  # clipped
  lengths = jnp.array([5, 4, 2], jnp.int32)
  key = jax.random.key(3)
  warped = np.asarray(audio.spec_augment(key, x, lengths, vtlp=0.2))
  factors = warped[:, 0, 1]  # band 1 reads band 1 * factor
  assert ((factors >= 0.8) & (factors <= 1.2)).all() and len(set(factors.tolist())) == 3
  np.testing.assert_allclose(warped, np.asarray(audio.warp_bands(x, jnp.asarray(factors))), 1e-6)
  # The masks land where they land without the warp: zeros of one run are zeros of the other.
  masks = dict(freq_masks=2, freq_width=3, time_masks=1, time_width=2)
  plain = np.asarray(audio.spec_augment(key, x + 1.0, lengths, **masks))
  both = np.asarray(audio.spec_augment(key, x + 1.0, lengths, vtlp=0.2, **masks))
  np.testing.assert_array_equal(plain == 0, both == 0)


@needs_espeak
def test_synthesis_is_a_pure_function_of_its_arguments():
  voices = ["en-us+f3", "en+whisper"] + [f"en+{v}" for v in ("caleb",) if v in espeak.variants()]
  for voice in voices:  # f3: echo and flutter state; whisper: noise; caleb: libc's rand
    first, rate = espeak.synthesize("three oh seven", voice, seed=5)
    espeak.synthesize("nine", "en-gb-x-rp+klatt4", seed=2)  # in between: another utterance
    again, _ = espeak.synthesize("three oh seven", voice, seed=5)
    assert rate == 22050 and first.dtype == np.int16 and len(first) > rate // 2
    np.testing.assert_array_equal(first, again)
  with pytest.raises(ValueError, match="no voice variant 'nope'"):
    espeak.synthesize("one", "en+nope")


@needs_espeak
def test_the_source_pads_normalised_features_and_reads_them_back_from_the_cache(
  tmp_path, monkeypatch
):
  monkeypatch.setenv("JAXVISION_CACHE_DIR", str(tmp_path))
  config = data_lib.data_config("speech", num_train=16, num_eval=7, num_eval_accent=7)
  dataset = data_lib.load_dataset(config)
  assert (len(dataset.train), len(dataset.eval)) == (16, 14)
  assert dataset.info == {
    "num_classes": 10,
    "groups": ["voices", "accent"],
    "max_digits": 7,
    "hop_ms": 10.0,
  }
  frames, bands = dataset.input_shape
  assert bands == 40 and frames % 16 == 0
  batch = dataset.train.get(np.arange(16))
  assert batch["inputs"].shape == (16, frames, 40) and batch["inputs"].dtype == np.float32
  assert batch["lengths"].dtype == np.int32 and batch["targets"].dtype == np.int32
  longest = max(batch["lengths"].max(), dataset.eval.get(np.arange(14))["lengths"].max())
  assert frames == -(-longest // 16) * 16  # the longest utterance of either split, rounded up
  for i, (x, length, target) in enumerate(
    zip(batch["inputs"], batch["lengths"], batch["targets"], strict=True)
  ):
    assert 30 < length <= frames
    np.testing.assert_array_equal(x[length:], 0.0)  # zero past the real frames
    np.testing.assert_allclose(x[:length].mean(0), 0.0, atol=0.01)  # per-utterance bands
    np.testing.assert_allclose(x[:length].std(0), 1.0, atol=0.01)
    count = 1 + i % 7  # balanced lengths
    assert (target[:count] >= 0).all() and (target[count:] == speech.PAD).all()
  # An example is the pure function of (seed, index): made again, it is what was cached.
  made = speech.UtteranceMaker(config, "train")(2 * config.seed, 5)
  np.testing.assert_allclose(
    batch["inputs"][5, : batch["lengths"][5]], made["features"], atol=4e-3
  )  # float16 storage
  np.testing.assert_array_equal(batch["targets"][5], made["targets"])
  evaluated = dataset.eval.get(np.arange(14))
  np.testing.assert_array_equal(evaluated["group"], [0] * 7 + [1] * 7)
  assert "group" not in batch

  def fail(*args):
    raise AssertionError("made again instead of read from the cache")

  monkeypatch.setattr(speech, "make_split", fail)
  cached = data_lib.load_dataset(config)
  for key, value in cached.train.get(np.arange(16)).items():
    np.testing.assert_array_equal(value, batch[key])
  assert sorted(p.name.split("-")[1] for p in tmp_path.iterdir()) == ["eval7+7", "train16"]


@needs_espeak
def test_train_digit_counts_cycle_in_the_train_split_alone():
  config = tiny_config(train_digit_counts=(1, 1, 3))
  train, eval_ = speech.UtteranceMaker(config, "train"), speech.UtteranceMaker(config, "eval")
  assert [len(train.sample(0, i)["digits"]) for i in range(6)] == [1, 1, 3, 1, 1, 3]
  assert [len(eval_.sample(1, i)["digits"]) for i in range(7)] == [1, 2, 3, 4, 5, 6, 7]
  balanced = speech.UtteranceMaker(tiny_config(), "train")
  assert [len(balanced.sample(0, i)["digits"]) for i in range(8)] == [1, 2, 3, 4, 5, 6, 7, 1]


@needs_espeak
def test_train_oh_prob_changes_the_train_split_alone_and_only_its_ohs():
  base, every, never = _config(), _config(train_oh_prob=1.0), _config(train_oh_prob=0.0)
  maker = lambda config, split="train": speech.UtteranceMaker(config, split)
  trains = [maker(c) for c in (base, every, never)]
  evals = [maker(c, "eval") for c in (base, every)]
  for i in range(40):
    default, always, none = (m.sample(0, i) for m in trains)
    zeros = default["digits"] == 0
    np.testing.assert_array_equal(always["oh"], zeros)
    assert not none["oh"].any()
    for key in ("digits", "variant", "rate", "snr_db", "synth_seed", "noise_seed"):
      np.testing.assert_array_equal(always[key], default[key])
    assert evals[1].sample(1, i)["text"] == evals[0].sample(1, i)["text"]
  draws = [trains[0].sample(0, i) for i in range(400)]
  ohs = sum(int(d["oh"].sum()) for d in draws) / sum(int((d["digits"] == 0).sum()) for d in draws)
  assert 0.2 < ohs < 0.4  # the default: oh_prob 0.3 in both splits


@needs_espeak
def test_the_cache_name_holds_every_key_and_the_synthesizer_version():
  config = tiny_config()
  names = {split: speech.cache_name(config, split) for split in ("train", "eval")}
  assert espeak.version() in names["train"]
  for key, value in [
    ("min_snr_db", 5.0),
    ("seed", 1),
    ("heldout_accent", "en-029"),
    ("n_mels", 80),
  ]:
    changed = tiny_config(**{key: value})
    assert speech.cache_name(changed, "train") != names["train"], key
    assert speech.cache_name(changed, "eval") != names["eval"], key
  # a train-only key names another train cache, the same eval cache, and at its default none
  singles = tiny_config(train_digit_counts=(1, 1, 2))
  assert speech.cache_name(singles, "train") != names["train"]
  assert speech.cache_name(singles, "eval") == names["eval"]
  for value in (0.0, 0.6):
    ohs = tiny_config(train_oh_prob=value)
    assert speech.cache_name(ohs, "train") != names["train"]
    assert speech.cache_name(ohs, "eval") == names["eval"]
  assert speech.cache_name(tiny_config(train_oh_prob=None), "train") == names["train"]
  # unset, it is a typed placeholder the command line can set, and changes no resumed config
  data = data_lib.data_config("speech")
  before = {k: v for k, v in data.to_dict().items() if k != "train_oh_prob"}  # an older run's
  assert data.train_oh_prob is None and workdir.config_changes(before, data.to_dict()) == []
  data.train_oh_prob = 0.5
  assert data.train_oh_prob == 0.5 and data_lib.data_config("speech").train_oh_prob is None
  more = tiny_config(num_train=32)
  assert speech.cache_name(more, "train") != names["train"]
  assert speech.cache_name(more, "eval") == names["eval"]  # the eval split is the same


def test_bad_settings_name_the_key():
  for changes, match in [
    (dict(min_digits=0), "min_digits"),
    (dict(train_digit_counts=(1, 8)), r"data.train_digit_counts=\(1, 8\): each must be in"),
    (dict(heldout_accent="en-xx"), "heldout_accent"),
    (dict(min_snr_db=30.0, max_snr_db=10.0), "min_snr_db"),
    (dict(max_rate=500), "max_rate"),
    (dict(oh_prob=2.0), "oh_prob"),
    (dict(train_oh_prob=1.5), r"data.train_oh_prob=1.5 must be in \[0, 1\] \(or unset\)"),
    (dict(train_oh_prob=-0.5), r"data.train_oh_prob=-0.5 must be in"),
  ]:
    with pytest.raises(ValueError, match=match):
      speech.validate(tiny_config(**changes))
