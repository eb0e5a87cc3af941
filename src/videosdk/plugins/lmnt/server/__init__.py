"""Old home of the local server, now the ``lmnt-local`` distribution's :mod:`lmnt_local.server`.

Kept so test suites written against ``videosdk.plugins.lmnt.server`` (``LocalLMNTServer``,
``Faults``, the engines) keep working.  Every name is an alias of the new module, not a copy, so
``monkeypatch.setattr`` on either path patches the one module the server uses; submodules are
aliased when first imported (an optional engine's module is imported only when asked for).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

import lmnt_local.server as _server

#: Submodules reachable under the old path, and where they live now.
_ALIASES = {
    "engines": "lmnt_local.server.engines",
    "engines.base": "lmnt_local.server.engines.base",
    "engines.espeak": "lmnt_local.server.engines.espeak",
    "engines.piper": "lmnt_local.server.engines.piper",
    "engines.select": "lmnt_local.server.engines.select",
    "engines.tone": "lmnt_local.server.engines.tone",
    "espeak": "lmnt_local.server.engines.espeak",
    "app": "lmnt_local.server.app",
    "config": "lmnt_local.server.config",
    "faults": "lmnt_local.server.faults",
    "record": "lmnt_local.server.record",
}
_PREFIX = __name__ + "."


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old submodule name with the new module object itself."""

    def __init__(self) -> None:
        self._own_specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.startswith(_PREFIX) and fullname[len(_PREFIX) :] in _ALIASES:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(_ALIASES[spec.name[len(_PREFIX) :]])
        self._own_specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the alias's spec on the real module: give it back its own.
        module.__spec__ = self._own_specs.pop(module.__name__, module.__spec__)


if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _AliasFinder())
sys.modules[__name__] = _server
