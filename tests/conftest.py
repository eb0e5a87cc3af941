"""Shared test machinery: the real framework track drained headlessly, and the local server.

Nothing here mocks the framework or the socket: the track is videosdk-agents' own
``CustomAudioStreamTrack`` (sped up as its integration notes describe: a start time in the
past and no grace period, see ``track_helpers``), and the server is the package's
LMNT-compatible server on loopback, from the fixtures users get in
``videosdk.plugins.lmnt.testing``.
"""

from __future__ import annotations

import logging
import os
import tempfile

import pytest

pytest_plugins = ["videosdk.plugins.lmnt.testing"]

# Voices a developer fetched (lmnt-local voices fetch) must not change what the tests hear:
# the server reads this directory by default, so point it at an empty one for the whole run
# (subprocesses inherit it, see env_helpers.subprocess_env).
os.environ["LMNT_VOICES_HOME"] = tempfile.mkdtemp(prefix="lmnt-voices-")


@pytest.fixture(autouse=True)
def _quiet_framework_logs() -> None:
    logging.getLogger("videosdk.agents").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def piper_engine() -> object:
    """One loaded Piper engine for the whole run (loading costs ~0.6 s and ~300 MB).

    Skipped where Piper is not installed: the ``[test]`` extra installs it, so CI runs these.
    """
    pytest.importorskip("piper", reason="the neural engine needs the [neural] extra")
    from lmnt_local.server.engines import PiperEngine

    engine = PiperEngine()
    engine.load()
    return engine


@pytest.fixture(scope="session")
def hibari_engine() -> object:
    """One loaded hibari engine for the whole run (loading costs ~1-3 s and ~100 MB).

    Skipped where hibari-tts is not installed: the ``[test]`` extra installs it.
    """
    pytest.importorskip("hibari", reason="the hibari engine needs the [hibari] extra")
    from lmnt_local.server.engines.hibari import HibariEngine

    engine = HibariEngine()
    engine.load()
    return engine
