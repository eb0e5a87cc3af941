"""The hibari engine behind the real server: a female default voice, intelligible, every word
timed where it is heard, exact speed, repeatable seeds, its voices found on disk.

One loaded engine serves the whole run (the ``hibari_engine`` fixture); every test that speaks
talks to a real :class:`LocalLMNTServer` over TCP with a raw WebSocket or HTTP client, so what
is checked is what an LMNT client receives.  Figures (docs/performance.md): median pitch
~190 Hz, pocketsphinx WER over Harvard list 1 ~0.2-0.3, word starts within ~50 ms of
pocketsphinx's forced alignment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest

from lmnt_local.server import LocalLMNTServer
from lmnt_local.server.engines import PLAYBACK_LEAD

from asr_helpers import RATE as ASR_RATE
from asr_helpers import SENTENCES, align, wer
from audio_helpers import median_pitch, s16_array
from neural_helpers import stream

pytest.importorskip("hibari", reason="the hibari engine needs the [hibari] extra")
pytestmark = pytest.mark.timeout(120)

RATE = 24000
HARVARD_1 = SENTENCES[1:]  # the ten sentences of Harvard list 1
MIXED = "Dr. Smith paid $42.50 on Jan. 3rd, 2024 — and it was great & fun! ... ok"


def _timestamps(got: Any) -> list[dict[str, Any]]:
    return [w for _, m in got.messages if m.get("type") == "timestamps" for w in m["timestamps"]]


async def _http(srv: LocalLMNTServer, text: str, rate: int, **body: Any) -> bytes:
    payload = {"text": text, "voice": "ava", "format": "pcm_s16le", "sample_rate": rate, **body}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{srv.http_url}/v1/ai/speech/bytes", json=payload, headers={"X-API-Key": "k"}
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.read()


# -- voices --------------------------------------------------------------------------------------


async def test_voices_are_female_english_and_every_lmnt_name_speaks(hibari_engine: Any) -> None:
    async with LocalLMNTServer(engine=hibari_engine) as srv:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{srv.http_url}/v1/ai/voice/list", headers={"X-API-Key": "k"}) as resp,
        ):
            voices = {v["id"]: v for v in await resp.json()}
        german = await stream(srv.ws_url, "Hallo.", language="de")
        english = await stream(srv.ws_url, "Hello.", voice="heart", language="en")
    assert voices["heart"]["gender"] == "female" and voices["heart"]["language"] == "en"
    for name in ("ava", "leah", "lily", "amy", "elowen", "morgan", "ansel"):
        assert voices[name]["tags"] == ["alias", "heart"], voices[name]
    [error] = german.errors()
    assert "hibari voices speak English" in json.dumps(error)
    assert not german.audio and german.close_code == 1002
    assert english.audio and not english.errors()


async def test_the_default_voice_is_female(hibari_engine: Any) -> None:
    async with LocalLMNTServer(engine=hibari_engine) as srv:
        got = await stream(srv.ws_url, " ".join(HARVARD_1[:3]))
    pitch = median_pitch(bytes(got.audio), RATE)
    assert pitch > 165, f"median pitch {pitch:.0f} Hz"  # measured ~190 Hz; joe ~95 Hz


async def test_harvard_list_1_is_intelligible(hibari_engine: Any) -> None:
    async with LocalLMNTServer(engine=hibari_engine) as srv:
        audios = [await _http(srv, text, ASR_RATE) for text in HARVARD_1]
    rate = wer(HARVARD_1, audios)
    assert rate <= 0.30, f"pocketsphinx word error rate {rate:.2f} over Harvard list 1"


# -- words -----------------------------------------------------------------------------------------


async def test_every_word_is_timed_in_order_and_the_times_fill_the_audio(
    hibari_engine: Any,
) -> None:
    async with LocalLMNTServer(engine=hibari_engine) as srv:
        got = await stream(
            srv.ws_url, MIXED, **{"lmnt-version": "1.2", "return_timestamps": True}, seed=3
        )
    seconds = len(got.audio) / 2 / RATE
    words = _timestamps(got)
    assert [w["text"] for w in words] == MIXED.split()  # "—", "&", "..." included
    end = 0.0
    for word in words:
        assert word["start"] >= end - 1e-3, f"{word} starts before the previous word ends"
        assert word["duration"] > 0, f"{word} has no time"
        end = word["start"] + word["duration"]
    assert end <= seconds + 1e-3
    assert end >= seconds - 0.6, f"the last word ends at {end:.2f} s of {seconds:.2f} s"
    by_text = {w["text"]: w for w in words}
    assert by_text["$42.50"]["duration"] > 4 * by_text["on"]["duration"]
    pcm = s16_array(bytes(got.audio)).astype(np.float64)
    for w in words:  # a sounding word's span holds sound
        a, b = round(w["start"] * RATE), round((w["start"] + w["duration"]) * RATE)
        if w["text"][0].isalnum() and b - a > RATE // 20:
            level = np.sqrt(np.mean(pcm[a:b] ** 2))
            assert level > 300, f"{w['text']!r} at {w['start']:.2f} s is silent (RMS {level:.0f})"


async def test_word_starts_agree_with_a_recogniser(hibari_engine: Any) -> None:
    """Each word's start against pocketsphinx's forced alignment of the same audio: measured
    mean |error| ~0.05 s (Piper's ~0.05 s too: part of it is the aligner's own bias)."""
    errors: list[float] = []
    async with LocalLMNTServer(engine=hibari_engine) as srv:
        for text in HARVARD_1[:5]:
            got = await stream(
                srv.ws_url,
                text,
                sample_rate=ASR_RATE,
                seed=1,
                **{"lmnt-version": "1.2", "return_timestamps": True},
            )
            words = _timestamps(got)
            aligned = align(bytes(got.audio), text)
            assert len(aligned) == len(words), (aligned, words)
            errors += [abs(w["start"] - a) for w, (_, a, _) in zip(words, aligned, strict=True)]
    assert float(np.median(errors)) < 0.1, f"median word start error {np.median(errors):.3f} s"


# -- speed, seed, rate ---------------------------------------------------------------------------


async def test_seed_makes_output_repeatable(hibari_engine: Any) -> None:
    text = "Hello there, this is a seed test."
    async with LocalLMNTServer(engine=hibari_engine) as srv:
        a = await stream(srv.ws_url, text, seed=7)
        b = await stream(srv.ws_url, text, seed=7)
        c = await stream(srv.ws_url, text, seed=8)
        d = await stream(srv.ws_url, text)
    assert a.audio and a.audio == b.audio
    assert len(a.audio) == len(c.audio) == len(d.audio)  # the noise varies, never the timing
    assert a.audio != c.audio and a.audio != d.audio


async def test_sample_rates_keep_the_duration(hibari_engine: Any) -> None:
    text = "The birch canoe slid on the smooth planks."
    async with LocalLMNTServer(engine=hibari_engine) as srv:
        lengths = {
            rate: len(await _http(srv, text, rate, seed=1)) / 2 / rate for rate in (8000, 16000)
        }
    assert lengths[8000] == pytest.approx(lengths[16000], rel=0.01)


LONG_FIRST = (
    "When the quick brown fox finally jumped, the lazy dog who was sleeping by the warm "
    "fire in the old farmhouse did not even notice it at all."
)


@contextlib.contextmanager
def _queued(lead: float) -> Iterator[None]:
    """Calls made inside see ``lead`` seconds of audio queued, as the server tells an engine."""
    token = PLAYBACK_LEAD.set(lead)
    try:
        yield
    finally:
        PLAYBACK_LEAD.reset(token)


async def _speak(engine: Any, text: str, *, lead: float, rate: int = RATE) -> list[Any]:
    """The chunks of one call, as the server makes them with ``lead`` seconds queued."""
    with _queued(lead):
        return [
            c
            async for c in engine.synthesize(
                text, voice="ava", language="auto", sample_rate=rate, seed=3
            )
        ]


def _envelope_db(pcm: npt.NDArray[np.int16], window: int = 480) -> npt.NDArray[np.float64]:
    frames = pcm[: pcm.size // window * window].astype(np.float64).reshape(-1, window)
    return np.asarray(10 * np.log10((frames**2).mean(axis=1) + 1.0))


@pytest.mark.parametrize(
    "sentence",
    # The second: with too little decoder context (0.4 s) its level after the seam was 4.7 dB off.
    [LONG_FIRST, "Thanks for waiting, your order is on its way and will arrive very soon today."],
    ids=["long", "agent"],
)
async def test_a_long_first_sentence_comes_in_two_steps_as_one_signal(
    hibari_engine: Any, sentence: str
) -> None:
    """A turn's first sentence, when long, comes as its first second and then the rest (with
    nothing queued: lead 0), made with the whole sentence's prosody: the same length and the
    same word times as the sentence made at once, no text cut, and no step in level where the
    two steps meet."""
    two = await _speak(hibari_engine, sentence, lead=0.0)
    whole = await _speak(hibari_engine, sentence, lead=5.0)
    assert len(two) == 2 and len(whole) == 1
    first = s16_array(two[0].pcm)
    assert 0.5 <= first.size / RATE <= 1.2
    joined = np.concatenate([s16_array(c.pcm) for c in two])
    at_once = s16_array(whole[0].pcm)
    assert joined.size == at_once.size
    words = [(w.text, round(w.start, 6), round(w.duration, 6)) for c in two for w in c.words]
    assert words == [(w.text, round(w.start, 6), round(w.duration, 6)) for w in whole[0].words]
    assert [w[0] for w in words] == sentence.split()
    assert all(w.start < first.size / RATE for w in two[0].words)
    # The two steps and the sentence made at once differ only by the int8 model's rounding.
    ours, theirs = _envelope_db(joined), _envelope_db(at_once)
    seam = first.size // 480
    assert np.corrcoef(ours, theirs)[0, 1] > 0.99
    assert np.abs(ours - theirs)[seam - 3 : seam + 6].max() < 3.0
    # At another rate one resampler carries the signal across the seam: nothing lost or added.
    two_8k = await _speak(hibari_engine, sentence, lead=0.0, rate=8000)
    whole_8k = await _speak(hibari_engine, sentence, lead=5.0, rate=8000)
    assert len(two_8k) == 2
    assert sum(len(c.pcm) for c in two_8k) == sum(len(c.pcm) for c in whole_8k)


async def test_the_first_step_arrives_well_before_the_whole_sentence(hibari_engine: Any) -> None:
    """The point of the two steps: the listener hears the first second after a fraction of
    the time the whole sentence takes (measured ~0.3x; asserted as a ratio, same run)."""

    async def first_chunk(lead: float) -> float:
        with _queued(lead):
            began = time.perf_counter()
            stream = hibari_engine.synthesize(
                LONG_FIRST, voice="ava", language="auto", sample_rate=RATE
            )
            async for _ in stream:
                took = time.perf_counter() - began
                break
            await stream.aclose()
            return took

    await first_chunk(0.0)
    two, whole = [], []
    for _ in range(5):
        two.append(await first_chunk(0.0))
        whole.append(await first_chunk(5.0))
    assert statistics.median(two) < 0.6 * statistics.median(whole)


# -- voices on disk ------------------------------------------------------------------------------


def test_voice_files_are_found_in_hibaris_layout_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A registry voice's file in a voice directory is a voice; a corrupt one is skipped with a
    warning naming it.  (The registry gains a voice made of heart's own model: no download.)"""
    from hibari.voices import VOICES, voice_path

    from lmnt_local.server.engines import hibari as module

    heart = Path(voice_path("heart"))
    digest = hashlib.sha256(heart.read_bytes()).hexdigest()
    registry = {
        **VOICES,
        "twin": {**VOICES["heart"], "bundled": False, "file": "twin.int8.onnx", "sha256": digest},
        "broken": {**VOICES["heart"], "bundled": False, "file": "broken.int8.onnx"},
    }
    monkeypatch.setattr(module, "_registry", lambda: registry)
    monkeypatch.setenv("HIBARI_HOME", str(tmp_path / "no-cache"))
    shutil.copyfile(heart, tmp_path / "twin.int8.onnx")
    (tmp_path / "broken.int8.onnx").write_bytes(b"\0" * VOICES["heart"]["bytes"])
    with caplog.at_level(logging.WARNING):
        found = {v.id: v for v in module.find_voices([tmp_path])}
    assert set(found) == {"heart", "twin"}
    assert found["twin"].model == tmp_path / "twin.int8.onnx"
    assert "broken" in caplog.text and "sha256" in caplog.text
    engine = module.HibariEngine(voice_dirs=[tmp_path])
    assert engine.has_voice("twin") and engine.resolve("twin", "en") == "twin"


def test_auto_prefers_hibari_and_engine_hibari_works() -> None:
    from lmnt_local.server.engines import best_engine, make_engine

    auto = best_engine()  # the router over every engine: the female names speak with heart
    assert auto.route("ava", "auto").engine.name == "hibari"  # type: ignore[attr-defined]
    assert make_engine("hibari").name == "hibari"
