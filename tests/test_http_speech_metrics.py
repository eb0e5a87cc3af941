"""HTTP speech in ``/metrics``: LMNT's ``/v1/ai/speech*`` and OpenAI's ``/v1/audio/speech``.

Requests by endpoint and status, errors by type, time to first byte, characters; labels stay a
bounded set (fixed endpoints, status codes, error types, key names) and never hold a key.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from lmnt_local.server import LocalLMNTServer, ToneEngine
from lmnt_local.server.ops.limits import KeyLimit, LimitsConfig

KEY = "sk-metrics-key-7f3a9"
TIGHT = "sk-metrics-tight-0c1d"
TEXT = "Hello there."


def _samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return out


async def test_http_speech_is_counted_by_endpoint_status_and_error_type() -> None:
    limits = LimitsConfig(keys={TIGHT: ("tight-team", KeyLimit(chars_per_minute=15))})
    async with (
        LocalLMNTServer(ToneEngine(), api_keys={KEY, TIGHT}, limits=limits) as srv,
        aiohttp.ClientSession() as http,
        asyncio.timeout(30),
    ):
        lmnt = {"X-API-Key": KEY}
        bearer = {"Authorization": f"Bearer {KEY}"}
        base = srv.http_url
        body = {"text": TEXT, "voice": "ava", "format": "mp3"}
        openai = {"model": "tts-1", "voice": "alloy", "input": TEXT}
        calls = [
            ("/v1/ai/speech/bytes", body, lmnt, 200),
            ("/v1/ai/speech/bytes", body, lmnt, 200),
            ("/v1/ai/speech", body, lmnt, 200),
            ("/v1/audio/speech", openai, bearer, 200),
            ("/v1/ai/speech/bytes", {**body, "voice": "nobody"}, lmnt, 422),
            ("/v1/ai/speech/bytes", body, {}, 401),
            ("/v1/ai/speech/bytes", body, {"X-API-Key": "sk-wrong-11"}, 403),
            ("/v1/audio/speech", {**openai, "voice": "nobody"}, bearer, 400),
            ("/v1/audio/speech", openai, {"Authorization": "Bearer sk-wrong-22"}, 401),
            ("/v1/audio/speech", openai, {"Authorization": f"Bearer {TIGHT}"}, 200),
            ("/v1/audio/speech", openai, {"Authorization": f"Bearer {TIGHT}"}, 429),
            ("/v1/ai/speechXYZ", body, lmnt, 404),  # not a speech route: not a label
        ]
        for path, json, headers, status in calls:
            async with http.post(base + path, json=json, headers=headers) as resp:
                await resp.read()
                assert resp.status == status, (path, status, await resp.text())
        async with http.get(base + "/metrics") as resp:
            text = await resp.text()

    assert KEY not in text and TIGHT not in text and "sk-wrong" not in text
    got = _samples(text)
    requests = {
        (dict(k)["endpoint"], dict(k)["code"]): v
        for k, v in got["lmnt_http_speech_requests_total"].items()
    }
    assert requests == {
        ("/v1/ai/speech/bytes", "200"): 2,
        ("/v1/ai/speech", "200"): 1,
        ("/v1/audio/speech", "200"): 2,
        ("/v1/ai/speech/bytes", "422"): 1,
        ("/v1/ai/speech/bytes", "401"): 1,
        ("/v1/ai/speech/bytes", "403"): 1,
        ("/v1/audio/speech", "400"): 1,
        ("/v1/audio/speech", "401"): 1,
        ("/v1/audio/speech", "429"): 1,
    }
    ttfb = {
        dict(k)["endpoint"]: v
        for k, v in got["lmnt_http_speech_time_to_first_byte_seconds_count"].items()
    }
    assert ttfb == {"/v1/ai/speech/bytes": 2, "/v1/ai/speech": 1, "/v1/audio/speech": 2}
    chars = {dict(k)["endpoint"]: v for k, v in got["lmnt_http_speech_characters_total"].items()}
    assert chars == {
        "/v1/ai/speech/bytes": 2 * len(TEXT),
        "/v1/ai/speech": len(TEXT),
        "/v1/audio/speech": 2 * len(TEXT),
    }
    errors = {dict(k)["type"]: v for k, v in got["lmnt_errors_total"].items()}
    assert errors["invalid_request_error"] == 2  # 422 (LMNT) and 400 (OpenAI)
    assert errors["authentication_error"] == 2  # missing LMNT key, wrong OpenAI key
    assert errors["permission_error"] == 1  # wrong LMNT key
    assert errors["rate_limit_error"] == 1
    by_key = {dict(k)["key"] for k in got["lmnt_characters_total"]}
    assert "tight-team" in by_key and all(k.startswith(("key_", "tight-")) for k in by_key)
