"""Who speaks a Piper voice: female, male or unknown.

Piper's catalogue and its ``.onnx.json`` configs carry no gender, yet LMNT's voice names
promise one (Ava is female, Morgan male), so the server needs it to route a name to a voice that
matches.  A ``"gender"`` key added to a config wins (``"speaker_genders": {"p225": "female"}``
for the speakers of a multi-speaker model); otherwise this table, written from the voices' model
cards and dataset descriptions by voice name.  Names not in it, and multi-speaker models, are
``unknown`` (a router never picks an unknown voice for a name that wants a gender while a known
one exists).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["PIPER_GENDERS", "voice_gender"]

_FEMALE = (
    "alba amy anna berta cori daniela eva_k gosia hfc_female irina jenny_dioco kathleen "
    "kerstin kristin lada lessac lili lisa ljspeech marylux meera natia nathalie paola "
    "priyamvada ramona rapunzelina raya salka siwis southern_english_female ugla vais1000 "
    "huayan upc_ona"
)
_MALE = (
    "ald alan amir arjun artur bryce bui carlfm claude dfki danny darkman davefx denis dmitri "
    "edresson faber fahrettin fettah gilles gwryw_gogleddol harri hfc_male imre iseke jirka "
    "joe john kareem karlsson kusal mc_speech mihai norman northern_english_male pavoque pim "
    "pratham riccardo rohan ronnie ruslan ryan rdh steinn talesyntese thorsten "
    "thorsten_emotional tom tugão upc_pau cadu jeff"
)

#: Piper voice name (the middle of ``en_US-amy-medium``) -> "female" / "male".
PIPER_GENDERS: Mapping[str, str] = {
    **{name: "female" for name in _FEMALE.split()},
    **{name: "male" for name in _MALE.split()},
}

_KNOWN = frozenset({"female", "male", "neutral"})


def voice_gender(stem: str, config: Mapping[str, object]) -> str:
    """The gender of the voice in file ``stem`` (``en_US-amy-medium``) with ``config``."""
    given = config.get("gender")
    if isinstance(given, str) and given.strip().lower() in _KNOWN:
        return given.strip().lower()
    parts = stem.split("-")
    name = parts[1] if len(parts) >= 3 else str(config.get("dataset") or stem)
    return PIPER_GENDERS.get(name, PIPER_GENDERS.get(str(config.get("dataset")), "unknown"))
