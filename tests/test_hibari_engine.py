"""The hibari engine behind the real server: a female default voice, intelligible, every word
timed where it is heard, exact speed, repeatable seeds, its voices found on disk.

One loaded engine serves the whole run (the ``hibari_engine`` fixture); every test that speaks
talks to a real :class:`LocalLMNTServer` over TCP with a raw WebSocket or HTTP client, so what
is checked is what an LMNT client receives.  Figures (docs/performance.md): median pitch
~190 Hz, pocketsphinx WER over Harvard list 1 ~0.2-0.3, word starts within ~50 ms of
pocketsphinx's forced alignment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from lmnt_local.server import LocalLMNTServer

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


async def test_a_long_sentence_starts_with_its_first_clause(hibari_engine: Any) -> None:
    sentence = (
        "When the quick brown fox finally jumped, the lazy dog who was sleeping by the warm "
        "fire in the old farmhouse did not even notice it at all."
    )
    chunks = [
        c
        async for c in hibari_engine.synthesize(
            sentence, voice="ava", language="auto", sample_rate=RATE
        )
    ]
    assert len(chunks) == 2
    assert [w.text for w in chunks[0].words] == sentence.split()[:7]
    assert len(chunks[0].pcm) < len(chunks[1].pcm)


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
