"""libespeak-ng through ``ctypes``: finding it, its one initialisation, lock and worker thread.

Apart from the speaking because this is the process-wide part: the library keeps global state and
is not re-entrant, so every call into it goes through the one :class:`_Runtime`, under
:data:`_LOCK`, on its one worker thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmnt_local.server.engines.espeak.utterance import _Counter, _Utterance


# What the ``espeak`` extra installs; naming the package itself would fetch the index's 1.0.30.
_INSTALL_HINT = "pip install 'espeakng-loader>=0.2.4,<0.3'"

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # without it a bad data path calls exit(1) inside the library
_POS_CHARACTER = 1
_CHARS_UTF8 = 0x1
_ENDPAUSE = 0x1000  # a sentence-final pause after every Synth call: sentences join naturally
_PHONEMES = 0x100  # [[ ]] holds phoneme mnemonics (the text front-end's IPA, converted)
_PARAM_RATE = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EE_OK = 0
_PARAM_WORDGAP = 7  # extra pause between words, 10 ms units

_DEFAULT_LANGUAGE_VOICE = "en-us"

_LOCK = threading.Lock()
"""Held around every call into libespeak-ng: the library is not re-entrant."""


class _EspeakEvent(ctypes.Structure):
    _fields_ = (
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),  # union { int; const char*; char[8] }
    )


class _EspeakVoice(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    )


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent)
)


def _locate_library() -> tuple[str, str | None]:
    """Where libespeak-ng and its data are: the wheel first, then a system library.

    Returns the library path and the data path (``None``: the system library's built-in one).
    """
    try:
        import espeakng_loader
    except ImportError:
        pass
    else:
        library = str(espeakng_loader.get_library_path())
        if Path(library).exists():
            try:
                return library, str(espeakng_loader.get_data_path())
            except RuntimeError:
                pass
    found = ctypes.util.find_library("espeak-ng")
    if found:
        return found, None
    raise RuntimeError(
        "The local speech engine needs libespeak-ng: install it with "
        f"{_INSTALL_HINT} (or the system package libespeak-ng1)."
    )


class _Runtime:
    """The one initialised libespeak-ng of this process, with its worker thread."""

    def __init__(self) -> None:
        library_path, data_path = _locate_library()
        try:
            lib = ctypes.CDLL(library_path)
        except OSError as exc:
            raise RuntimeError(f"Cannot load {library_path} ({exc}); try {_INSTALL_HINT}") from exc
        lib.espeak_Initialize.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = (_SYNTH_CALLBACK,)
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = (ctypes.c_void_p,)
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
        lib.espeak_Synth.argtypes = (
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        )
        lib.espeak_Synth.restype = ctypes.c_int
        self.lib = lib
        data = data_path.encode() if data_path is not None else None
        native_rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_DONT_EXIT
        )
        if native_rate <= 0:
            raise RuntimeError(
                f"espeak_Initialize failed ({native_rate}) with data path {data_path!r}; "
                f"reinstall with {_INSTALL_HINT}"
            )
        self.native_rate: int = native_rate
        # ctypes does not keep the trampoline alive: this reference must outlive every Synth.
        self._callback = _SYNTH_CALLBACK(self._on_synth)
        lib.espeak_SetSynthCallback(self._callback)
        self.active: _Utterance | _Counter | None = None
        self._voice: str | None = None
        self.languages, self.voice_files = self._list_voices()
        # One thread rather than the loop's default executor: jobs queued behind the lock would
        # otherwise sit on executor threads that DNS lookups and file I/O need.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")

    def _list_voices(self) -> tuple[dict[str, str], frozenset[str]]:
        """Language tag -> voice file name, and the set of voice file names (both lower case)."""
        languages: dict[str, str] = {}
        files: set[str] = set()
        table = self.lib.espeak_ListVoices(None)
        i = 0
        while table[i]:
            voice = table[i].contents
            i += 1
            if not voice.identifier or not voice.languages:
                continue
            file = voice.identifier.decode(errors="replace").rsplit("/", 1)[-1].lower()
            files.add(file)
            # languages: repeated (priority byte, NUL-terminated name), ended by a 0 priority.
            address = voice.languages
            while ctypes.string_at(address, 1)[0] != 0:
                tag = ctypes.string_at(address + 1)
                address += 2 + len(tag)
                languages.setdefault(tag.decode(errors="replace").lower(), file)
        return languages, frozenset(files)

    def select(self, voice: str, wpm: int, gap: int = 0) -> None:
        """Make ``voice`` current (caller holds ``_LOCK``); falls back rather than fails."""
        if voice != self._voice:
            base = voice.split("+", 1)[0]
            for candidate in (voice, base, _DEFAULT_LANGUAGE_VOICE):
                if self.lib.espeak_SetVoiceByName(candidate.encode()) == _EE_OK:
                    break
            else:
                raise RuntimeError(f"espeak-ng has no voice {voice!r} and no English fallback")
            self._voice = voice
        self.lib.espeak_SetParameter(_PARAM_RATE, wpm, 0)
        self.lib.espeak_SetParameter(_PARAM_WORDGAP, gap, 0)

    def _on_synth(self, wav: Any, count: int, events: Any) -> int:
        utterance = self.active
        if utterance is None:
            return 0
        try:
            return utterance.on_audio(wav, count, events)
        except BaseException as exc:  # never let an exception unwind into C
            utterance.fail(exc)
            return 1


_RUNTIME: _Runtime | None = None
_RUNTIME_LOCK = threading.Lock()


def _runtime() -> _Runtime:
    global _RUNTIME
    with _RUNTIME_LOCK:
        if _RUNTIME is None:
            with _LOCK:
                _RUNTIME = _Runtime()
        return _RUNTIME
