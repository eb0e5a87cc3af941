"""The ``auto`` engine: every installed engine behind one voice list, names true to their voices.

A user of ``[local]`` has several engines at once: neural ones (hibari, Piper), each with its
own voices, and espeak-ng, robotic but speaking ~100 languages.  This router lists every voice
of every engine (with the gender and language its engine knows) and resolves each request to
one of them:

* an engine's own voice id (``heart``, ``en_US-joe-medium``, ``en_US-libritts-high#p123``,
  ``espeak-female``) speaks with that voice; a ``language`` it does not speak is refused;
* an LMNT name (ava, leah, lily, amy, elowen: female; morgan, ansel: male) speaks with the
  first neural voice of its gender in the request's language (``auto``: English), engines in
  priority order (hibari first: fastest and clearest).  With no voice of that gender there, it
  falls back to another voice of that language and says so (:meth:`RouterEngine.notes`, the
  alias's description and ``fallback`` tag in the voice list);
* a language no neural voice speaks is spoken by espeak-ng in that language (the name keeps its
  espeak variant: de + Ava -> ``de+f3``), and refused only when espeak-ng cannot speak it either.

The router is itself a :class:`~.base.SpeechEngine`: the server, the CLI and tests see one
engine.  ``load()`` loads every engine; one that fails (e.g. every Piper file broken) is left
out with a one-line problem in :attr:`RouterEngine.problems` instead of stopping the server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from lmnt_local.server.engines.base import (
    LMNT_VOICES,
    EngineChunk,
    LanguageError,
    SpeechEngine,
    VoiceInfo,
    load_engine,
)

__all__ = ["ESPEAK_VOICES", "Route", "RouterEngine", "language_family"]

log = logging.getLogger("lmnt_local.server")

_LMNT = {v.id: v for v in LMNT_VOICES}
_DEFAULT_LANGUAGE = "en"
#: espeak-ng's own entries in the list: one per gender, speaking any language it knows; the
#: value is the LMNT name whose variant it uses (ava: f3, morgan: m1).
ESPEAK_VOICES = {"espeak-female": ("ava", "female"), "espeak-male": ("morgan", "male")}


def language_family(language: str) -> str | None:
    """``"de-AT"``/``"pt_BR"`` -> ``"de"``/``"pt"``; ``auto`` and empty -> ``None``."""
    tag = language.strip().lower().replace("_", "-")
    if not tag or tag == "auto":
        return None
    return tag.split("-", 1)[0]


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes: ``engine`` speaks ``voice`` (its own id); ``speaks`` is that
    voice as listed; ``note`` says why it is not what the name promised (``None``: it is)."""

    engine: SpeechEngine
    voice: str
    speaks: VoiceInfo
    note: str | None = None
    #: The language passed on: the caller's for espeak-ng, ``auto`` for a neural voice (the
    #: router already checked it speaks the language).
    language: str = "auto"


@dataclass(frozen=True, slots=True)
class _Own:
    engine: SpeechEngine
    info: VoiceInfo
    rank: int  # engine priority


class RouterEngine:
    """Speaks with whichever installed engine has the right voice (see the module docstring).

    ``engines``: neural engines in priority order, optionally espeak-ng (``name == "espeak"``);
    the tone engine is for when nothing else is installed and is never routed to here.
    """

    name = "auto"

    def __init__(self, engines: Sequence[SpeechEngine]) -> None:
        if not engines:
            raise ValueError("RouterEngine needs at least one engine")
        self._neural = [e for e in engines if e.name not in ("espeak", "tone")]
        self._espeak = next((e for e in engines if e.name == "espeak"), None)
        self._left_out: list[str] = []
        self._lock = threading.Lock()
        self._noted: set[str] = set()
        self._build()

    # -- the voice list ----------------------------------------------------------------------

    def _build(self) -> None:
        own: dict[str, _Own] = {}
        for rank, engine in enumerate(self._neural):
            for info in engine.voices():
                if "alias" in info.tags or info.id.lower() in _LMNT or info.id in own:
                    continue
                own[info.id] = _Own(engine, info, rank)
        if self._espeak is not None:
            for voice_id, (_, gender) in ESPEAK_VOICES.items():
                info = VoiceInfo(
                    voice_id,
                    f"espeak-ng {gender}",
                    gender,
                    "espeak-ng (robotic): speaks any of its ~100 languages",
                    tags=("espeak",),
                )
                own[voice_id] = _Own(self._espeak, info, len(self._neural))
        self._own = own
        aliases = []
        for lmnt in LMNT_VOICES:
            try:
                route = self.route(lmnt.id, "auto")
            except LanguageError:
                continue
            tags = ["alias", route.speaks.id]
            if route.note is not None:
                tags.append("fallback")
            described = f"LMNT's {lmnt.name}, spoken here by {_engine_label(route)}"
            aliases.append(
                VoiceInfo(
                    lmnt.id,
                    lmnt.name,
                    route.speaks.gender,
                    described
                    + (
                        f" ({route.speaks.gender}: no {lmnt.gender} voice installed)"
                        if route.note
                        else ""
                    ),
                    tags=tuple(tags),
                    language=route.speaks.language,
                )
            )
        self._listed = aliases + [o.info for o in own.values()]

    def voices(self) -> list[VoiceInfo]:
        return list(self._listed)

    @property
    def problems(self) -> list[str]:
        """One line per engine or voice file left out (also logged as warnings)."""
        lines = list(self._left_out)
        for engine in self._neural:
            lines.extend(getattr(engine, "problems", ()))
        return lines

    def has_voice(self, voice: str) -> bool:
        return voice in self._own or voice.lower() in _LMNT

    def notes(self) -> list[str]:
        """Names that do not speak with a voice of their gender, one line each, e.g.
        ``morgan, ansel: no male voice installed; they speak with heart (female)``."""
        by_note: dict[str, list[str]] = {}
        for info in self._listed:
            if "fallback" in info.tags:
                route = self.route(info.id, "auto")
                by_note.setdefault(str(route.note), []).append(info.id)
        return [f"{', '.join(ids)}: {note}" for note, ids in by_note.items()]

    def describe(self) -> str:
        """One line for the CLI: the engines and where LMNT's names go."""
        parts = []
        for engine in self._neural:
            ids = [o.info.id for o in self._own.values() if o.engine is engine]
            shown = ", ".join(ids[:4]) + (f" and {len(ids) - 4} more" if len(ids) > 4 else "")
            parts.append(f"{_ENGINE_LABELS.get(engine.name, engine.name)} ({shown})")
        if self._espeak is not None:
            parts.append("espeak-ng (" + ("other languages)" if self._neural else "any language)"))
        names: dict[str, list[str]] = {}
        for info in self._listed:
            if "alias" in info.tags:
                names.setdefault(info.tags[1], []).append(info.id)
        mapped = "; ".join(f"{', '.join(ids)} -> {target}" for target, ids in names.items())
        return f"auto: {', '.join(parts)}; {mapped}"

    # -- routing -----------------------------------------------------------------------------

    def route(self, voice: str, language: str) -> Route:
        """Which engine and voice speak ``voice`` in ``language``, or :class:`LanguageError`."""
        family = language_family(language)
        own = self._own.get(voice)
        if own is not None:
            return self._own_route(own, voice, language, family)
        lmnt = _LMNT.get(voice.lower())
        wanted = lmnt.gender if lmnt is not None else None
        neural = [o for o in self._own.values() if o.engine is not self._espeak]
        target = family or _DEFAULT_LANGUAGE
        candidates = [o for o in neural if language_family(o.info.language or "") == target]
        if not candidates and family is None:
            candidates = neural  # no English voice: ``auto`` speaks whatever is installed
        if candidates:
            best = min(
                candidates,
                key=lambda o: (o.info.gender != wanted, o.info.gender == "unknown", o.rank),
            )
            note = None
            if wanted is not None and best.info.gender != wanted:
                where = f" that speaks {family!r}" if family else ""
                note = (
                    f"no {wanted} voice{where} is installed; speaking with {best.info.id} "
                    f"({best.info.gender})"
                )
            return Route(best.engine, best.info.id, best.info, note)
        if self._espeak is not None and _espeak_speaks(self._espeak, language):
            name = voice.lower() if lmnt is not None else "ava"
            gender = wanted or "female"
            info = VoiceInfo(f"espeak-{gender}", f"espeak-ng {gender}", gender, tags=("espeak",))
            note = None
            if family is not None and neural:
                note = f"no neural voice speaks {family!r}; espeak-ng speaks it"
            return Route(self._espeak, name, info, note, language)
        have = sorted({language_family(o.info.language or "") or "?" for o in neural})
        extra = "" if self._espeak is not None else "; espeak-ng is not installed"
        raise LanguageError(
            f"language: no installed voice speaks {language!r} "
            f"(installed: {', '.join(have) or 'none'}{extra}); "
            "fetch a voice of that language with: lmnt-local voices fetch --list"
        )

    def _own_route(self, own: _Own, voice: str, language: str, family: str | None) -> Route:
        if own.engine is self._espeak:
            if not _espeak_speaks(own.engine, language):
                raise LanguageError(f"language: espeak-ng does not speak {language!r}")
            return Route(own.engine, ESPEAK_VOICES[voice][0], own.info, None, language)
        spoken = language_family(own.info.language or "")
        if family is not None and spoken is not None and family != spoken:
            raise LanguageError(
                f"language: voice {voice!r} speaks {own.info.language!r}, not {language!r}"
            )
        return Route(own.engine, voice, own.info)

    def resolve(self, voice: str, language: str) -> str:
        """The id of the voice a request speaks with (``LanguageError`` at init otherwise)."""
        route = self.route(voice, language)
        if route.note is not None:
            key = f"{voice}|{language}"
            with self._lock:
                first = key not in self._noted
                self._noted.add(key)
            if first:
                log.info(
                    "local LMNT server: voice %r, language %r: %s", voice, language, route.note
                )
        return route.speaks.id

    # -- loading and speaking ----------------------------------------------------------------

    def load(self) -> None:
        """Load every engine (blocking); one that cannot load is left out and named in
        :attr:`problems`, so a broken voice never takes the others down."""
        kept = []
        for engine in self._neural:
            try:
                load_engine(engine)
            except Exception as exc:
                label = _ENGINE_LABELS.get(engine.name, engine.name)
                self._left_out.extend(getattr(engine, "problems", ()))
                self._left_out.append(f"{label} left out: {exc}")
                log.warning("local LMNT server: %s left out: %s", label, exc)
                continue
            kept.append(engine)
        if self._espeak is not None:
            try:
                load_engine(self._espeak)
            except Exception as exc:
                self._left_out.append(f"espeak-ng left out: {exc}")
                self._espeak = None
        if not kept and self._espeak is None:
            raise RuntimeError("; ".join(self._left_out) or "no engine could be loaded")
        self._neural = kept
        self._build()

    async def synthesize(
        self,
        text: str,
        *,
        voice: str,
        language: str,
        sample_rate: int,
        speed: float = 1.0,
        seed: int | None = None,
    ) -> AsyncIterator[EngineChunk]:
        route = self.route(voice, language)
        chunks = route.engine.synthesize(
            text,
            voice=route.voice,
            language=route.language,
            sample_rate=sample_rate,
            speed=speed,
            seed=seed,
        )
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]


_ENGINE_LABELS = {"neural": "Piper", "hibari": "hibari", "espeak": "espeak-ng"}


def _engine_label(route: Route) -> str:
    label = _ENGINE_LABELS.get(route.engine.name, route.engine.name)
    if route.engine.name == "espeak":
        return f"espeak-ng ({route.speaks.gender} variant)"
    return f"{label} voice {route.speaks.id}"


def _espeak_speaks(engine: SpeechEngine, language: str) -> bool:
    speaks = getattr(engine, "speaks", None)
    return bool(speaks(language)) if callable(speaks) else True
