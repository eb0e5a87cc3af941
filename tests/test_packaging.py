"""The package lives in the ``videosdk.plugins`` namespace next to the SDK and other plugins."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def test_no_namespace_init_files_shipped() -> None:
    # Shipping videosdk/__init__.py would overwrite the SDK's own (see integration notes §8).
    assert not (SRC / "videosdk" / "__init__.py").exists()
    assert not (SRC / "videosdk" / "plugins" / "__init__.py").exists()
    assert (SRC / "videosdk" / "plugins" / "lmnt" / "py.typed").exists()


def test_plugin_imports_beside_the_sdk() -> None:
    from videosdk.agents import TTS

    import videosdk
    from videosdk.plugins.lmnt import LMNTTTS

    assert issubclass(LMNTTTS, TTS)
    assert hasattr(videosdk, "CustomAudioTrack")  # the SDK's own __init__ is intact
    spec = importlib.util.find_spec("videosdk.plugins.lmnt")
    assert spec is not None and spec.origin is not None
