"""Old home of the espeak-ng engine, now :mod:`.engines.espeak`: the same module object.

Aliasing (rather than re-exporting) keeps ``monkeypatch.setattr(espeak, ...)`` and private names
working for code written against this path.
"""

import sys

from .engines import espeak as _espeak

sys.modules[__name__] = _espeak
