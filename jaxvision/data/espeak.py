"""eSpeak NG through ctypes: text to int16 samples, the same samples for the same arguments.

The library and its voice data come from the `espeakng-loader` wheel (pip alone, nothing
system-wide). eSpeak NG keeps synthesis state in static variables (a glottal-pulse phase, the
echo buffer, pitch flutter) that carry from one utterance into the next and that neither
`espeak_Terminate` nor `espeak_Initialize` resets, and it draws noise from its own generator
(`espeak_ng_SetRandSeed`) and, for the "klatt 6" voices, from libc's `rand`. So `synthesize`
loads the library afresh for every utterance (dlopen, initialise, seed both generators,
synthesise, terminate, dlclose: about 8 ms for seven digits) and its samples depend only on its
arguments. The library is loaded from a private copy, so that no other holder of the wheel's
library (a phonemizer, say) keeps it loaded between calls. `synthesize` seeds the process's libc
`rand` as a side effect; calls are serialised by a lock.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import importlib.metadata
import os
import shutil
import tempfile
import threading

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE, _WORDGAP = 1, 3, 4, 7  # espeak_PARAMETER
_CALLBACK = ctypes.CFUNCTYPE(
  ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_LOCK = threading.Lock()


def missing() -> str | None:
  """Why eSpeak NG cannot be used here (the reason tests skip with), or None if it can."""
  try:
    import espeakng_loader
  except ImportError:
    return "the speech synthesizer is absent: pip install espeakng-loader"
  if not os.path.isfile(espeakng_loader.get_library_path()):
    return f"espeakng-loader has no library at {espeakng_loader.get_library_path()}"
  return None


def _paths() -> tuple[str, str]:
  reason = missing()
  if reason:
    raise RuntimeError(reason)
  import espeakng_loader

  return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


@functools.cache
def _private_library() -> str:
  """A copy of the wheel's library that only this module opens (removed at exit)."""
  library, _ = _paths()
  folder = tempfile.mkdtemp(prefix="jaxvision-espeak-")
  atexit.register(shutil.rmtree, folder, ignore_errors=True)
  path = os.path.join(folder, os.path.basename(library))
  shutil.copyfile(library, path)
  return path


@contextlib.contextmanager
def _fresh_library():
  """The library in its initial state (loaded now, unloaded on exit), under the module's lock."""
  with _LOCK:
    lib = ctypes.CDLL(_private_library())
    try:
      yield lib
    finally:
      import _ctypes

      _ctypes.dlclose(lib._handle)  # the next load starts from the initial state again


@functools.cache
def version() -> str:
  """eSpeak NG's version and the wheel's, e.g. "1.52.0-loader0.2.4" (for cache names)."""
  with _fresh_library() as lib:
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    info = lib.espeak_Info(None).decode()
  return f"{info}-loader{importlib.metadata.version('espeakng-loader')}"


@functools.cache
def variants() -> tuple[str, ...]:
  """The voice variants of the installed data (`voices/!v`: "m1", "f3", "klatt", ...), sorted."""
  _, data = _paths()
  return tuple(sorted(os.listdir(os.path.join(data, "voices", "!v"))))


def synthesize(
  text: str,
  voice: str,
  *,
  rate: int = 175,
  pitch: int = 50,
  pitch_range: int = 50,
  word_gap: int = 0,
  seed: int = 1,
) -> tuple[np.ndarray, int]:
  """Speaks `text` in `voice`.

  Args:
    text: what to say (UTF-8).
    voice: a language and optionally a variant, e.g. "en-us" or "en-gb-scotland+f3".
    rate: speed in words per minute (80-450).
    pitch: base pitch, 0-100 (50: the voice's own).
    pitch_range: intonation range, 0-100 (0: monotone).
    word_gap: extra pause between words, in units of 10 ms at the default speed.
    seed: of the synthesizer's noise generators.

  Returns:
    (samples [N] int16, sample rate).
  """
  _, data = _paths()
  name = voice.split("+", 1)[1] if "+" in voice else None
  if name is not None and name not in variants():
    raise ValueError(f"eSpeak NG has no voice variant {name!r} (voice {voice!r})")
  chunks = []

  def collect(wav, count, events):
    del events
    if wav and count > 0:
      chunks.append(np.ctypeslib.as_array(wav, (count,)).copy())
    return 0

  callback = _CALLBACK(collect)  # kept alive until the library is closed
  with _fresh_library() as lib:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    rate_hz = lib.espeak_Initialize(
      _AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), _INITIALIZE_DONT_EXIT
    )
    if rate_hz <= 0:
      raise RuntimeError(f"espeak_Initialize failed ({rate_hz}) with data {data}")
    try:
      lib.espeak_SetSynthCallback(callback)
      lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
      lib.espeak_ng_SetRandSeed(seed)
      ctypes.CDLL(None).srand(ctypes.c_uint(seed))
      if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise ValueError(f"eSpeak NG has no voice {voice!r}")
      for parameter, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
        lib.espeak_SetParameter(parameter, int(value), 0)
      lib.espeak_SetParameter(_WORDGAP, int(word_gap), 0)
      encoded = text.encode()
      lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
      ]
      error = lib.espeak_Synth(
        encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
      )
      if error != 0:
        raise RuntimeError(f"espeak_Synth failed ({error}) on {text!r} in {voice!r}")
      lib.espeak_Synchronize()
    finally:
      lib.espeak_Terminate()
  samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
  return samples.astype(np.int16), int(rate_hz)
