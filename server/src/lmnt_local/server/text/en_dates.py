"""English dates and times: "4/5/2026", "2026-04-05", "Dec. 3rd", "Mon, Jan 5", "9:30pm", "9 am".

Also the context helpers the other English rules share (the word before, a sentence end after).
"""

from __future__ import annotations

import re

from lmnt_local.server.text.normalizer import Piece, Rule, Scan
from lmnt_local.server.text.numbers_en import cardinal, ordinal, year
from lmnt_local.server.text.tables_en import MONTHS, WEEKDAYS

__all__ = ["DATE_RULES", "TIME_RULES", "month_name", "previous_word", "sentence_ends_after"]

MONTH_NAMES = tuple(MONTHS.values())
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_PREVIOUS_WORD = re.compile(r"([\w'.]+)[,:]?\s+$")
_SENTENCE_END = re.compile(r"[\"'\u201d\u2019)\]]*(?:$|\s*\n|\s+[A-Z\"\u201c(])")


def previous_word(text: str, start: int) -> str:
    """The word just before ``start`` ("" at the start of the text or a sentence)."""
    found = _PREVIOUS_WORD.search(text, max(0, start - 40), start)
    return found.group(1) if found else ""


def sentence_ends_after(text: str, end: int) -> bool:
    """True when the text ends at ``end`` or a new sentence starts there (a capital follows)."""
    return _SENTENCE_END.match(text, end) is not None


def month_name(written: str) -> str:
    return MONTHS[written[:3].lower()]


def _date(month: int, day: int, year_text: str | None) -> str | None:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    said = f"{MONTH_NAMES[month - 1]} {ordinal(day)}"
    if year_text:
        said += ", " + year(int(year_text))
    return said


def _iso(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    said = _date(int(m["m"]), int(m["d"]), m["y"])
    return None if said is None else [(m.start(), m.end(), said)]


def _numeric(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    first, second, year_text = int(m["a"]), int(m["b"]), m["y"]
    if len(year_text) == 2:
        year_text = ("19" if int(year_text) > 50 else "20") + year_text
    # US order unless the first cannot be a month ("25/12/2026" is the 25th of December)
    if first > 12:
        said = _date(second, first, None)
        said = None if said is None else f"the {ordinal(first)} of {MONTH_NAMES[second - 1]}, "
        if said is not None:
            said += year(int(year_text))
    else:
        said = _date(first, second, year_text)
    return None if said is None else [(m.start(), m.end(), said)]


def _month_day(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    day = int(m["day"].rstrip("stndrh"))
    if not 1 <= day <= 31:
        return None
    pieces = [(m.start("mon"), m.end("mon"), month_name(m["mon"]))]
    pieces.append((m.start("day"), m.end("day"), ordinal(day)))
    if m["year"]:
        pieces.append((m.start("year"), m.end("year"), year(int(m["year"]))))
    return pieces


def _day_month(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    day = int(m["day"].rstrip("stndrh"))
    if not 1 <= day <= 31:
        return None
    said = ordinal(day)
    if previous_word(scan.text, m.start()).lower() != "the":
        said = "the " + said
    if not m["of"]:
        said += " of"
    pieces = [(m.start("day"), m.end("day"), said)]
    pieces.append((m.start("mon"), m.end("mon"), month_name(m["mon"])))
    if m["year"]:
        pieces.append((m.start("year"), m.end("year"), year(int(m["year"]))))
    return pieces


def _weekday(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    return [(m.start(), m.end(), WEEKDAYS[m["w"]])]


def _date_dash(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    """ "Dec 3-5": the second day is a day too."""
    if scan.last_kind != "date" or not scan.after_previous(m.start()):
        return None
    day = int(m["day"])
    if not 1 <= day <= 31:
        return None
    return [(m.start("d"), m.end("d"), "to"), (m.start("day"), m.end(), ordinal(day))]


_TIME_ZONE_AFTER = re.compile(
    r"\s+(?:Eastern|Central|Mountain|Pacific|Atlantic|Alaska|Hawaii|GMT|UTC|BST|CET|CEST|IST"
    r"|[ECMPA][SD]?T)\b"
)


def _meridiem(m: re.Match[str], scan: Scan) -> Piece:
    written = m["ap"]
    said = "AM" if written[0] in "aA" else "PM"
    end = m.end("ap")
    if (
        written.endswith(".")
        and sentence_ends_after(scan.text, end)
        and not _TIME_ZONE_AFTER.match(scan.text, end)
    ):
        said += "."
    return (m.start("ap"), m.end("ap"), said)


def _hour(h: int) -> str:
    return "zero" if h == 0 else cardinal(h)


def _duration(hours: int, minutes: int, seconds: int) -> str:
    parts = [
        f"{cardinal(value)} {name}" + ("" if value == 1 else "s")
        for value, name in ((hours, "hour"), (minutes, "minute"), (seconds, "second"))
        if value
    ]
    if not parts:
        return "zero seconds"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _compact_duration(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    """ "1h30m", "2h 15m", "5m30s": hours, minutes and seconds run together."""
    values = [int(m[g]) if m[g] else 0 for g in ("h", "m", "s")]
    if sum(1 for v in (m["h"], m["m"], m["s"]) if v) < 2:
        return None
    return [(m.start(), m.end(), _duration(*values))]


def _clock(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    h, mi = int(m["h"]), int(m["m"])
    sec = int(m["s"]) if m["s"] else None
    if mi > 59 or (sec is not None and sec > 59):
        return None
    if h > 24:  # "45:30" is a duration: minutes and seconds
        if sec is not None or m["ap"]:
            return None
        said = f"{cardinal(h)} minutes and {cardinal(mi)} second" + ("" if mi == 1 else "s")
        return [(m.start(), m.end("m"), said)]
    if sec is not None and not m["ap"]:  # "1:30:00", "2:05:30": how long, not what time
        return [(m.start(), m.end("s"), _duration(h, mi, sec))]
    if h == 0 and len(m["h"]) == 1 and not m["ap"]:  # "0:45": forty-five seconds
        return [(m.start(), m.end("m"), _duration(0, 0, mi))]
    if mi == 0 and not m["ap"]:
        # 24-hour times are said "seventeen hundred"; "00:00" is midnight
        said = "midnight" if h in (0, 24) else _hour(h) + (" hundred" if h > 12 else " o'clock")
    elif mi == 0:
        said = _hour(h)
    elif mi < 10:
        said = f"{_hour(h)} oh {cardinal(mi)}"
    else:
        said = f"{_hour(h)} {cardinal(mi)}"
    if sec is not None:
        said += f" and {cardinal(sec)} second" + ("" if sec == 1 else "s")
    end = m.end("s") if m["s"] else m.end("m")
    pieces = [(m.start(), end, said)]
    if m["ap"]:
        pieces.append(_meridiem(m, scan))
    return pieces


def _hour_meridiem(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    h = int(m["h"])
    if not 1 <= h <= 12:
        return None
    return [(m.start("h"), m.end("h"), cardinal(h)), _meridiem(m, scan)]


_AP = r"(?P<ap>[AaPp]\.?[Mm]\b\.?)"
_DAY_END = r"(?![\w:%]|[.,]\d)"

DATE_RULES = [
    Rule(
        "date_iso",
        r"(?<![\w.-])(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})(?![\w-]|[.,]\d)",
        _iso,
        "date",
        first=r"\d",
    ),
    Rule(
        "date_numeric",
        r"(?<![\w./-])(?P<a>\d{1,2})/(?P<b>\d{1,2})/(?P<y>\d{4}|\d{2})(?![\w/]|[.,]\d)",
        _numeric,
        "date",
        first=r"\d",
    ),
    Rule(
        "date_numeric_dash",
        r"(?<![\w./-])(?P<a>\d{1,2})-(?P<b>\d{1,2})-(?P<y>\d{4})(?![\w-]|[.,]\d)",
        _numeric,
        "date",
        first=r"\d",
    ),
    Rule(
        "weekday",
        rf"\b(?P<w>{'|'.join(sorted(WEEKDAYS, key=len, reverse=True))})\.?"
        rf"(?=,?\s+(?:{_MONTH}\b|\d))",
        _weekday,
        "date",
        first=r"MTWFS",
    ),
    Rule(
        "month_day",
        rf"\b(?P<mon>{_MONTH}\.?)\s(?P<day>\d{{1,2}}(?:st|nd|rd|th)?){_DAY_END}"
        r"(?:,?\s(?P<year>\d{4})(?![\w]|[.,]\d))?",
        _month_day,
        "date",
        first=r"JFMASOND",
    ),
    Rule(
        "day_month",
        rf"(?<![\w.,])(?P<day>\d{{1,2}}(?:st|nd|rd|th)?)\s(?P<of>of\s)?(?P<mon>{_MONTH}\b\.?)"
        r"(?:,?\s(?P<year>\d{4})(?![\w]|[.,]\d))?",
        _day_month,
        "date",
        first=r"\d",
    ),
    Rule(
        "date_dash",
        r"(?<=\w)\s?(?P<d>[-\u2013])\s?(?P<day>\d{1,2})(?:st|nd|rd|th)?(?![\w:]|[.,]\d)",
        _date_dash,
        "date",
        first=r"\s\-\u2013",
    ),
]

TIME_RULES = [
    Rule(
        "compact_duration",
        r"(?<![\w.])(?:(?P<h>\d{1,3})\s?h(?:rs?)?\s?)?(?:(?P<m>\d{1,3})\s?m(?:in)?\s?)?"
        r"(?:(?P<s>\d{1,3})\s?s(?:ec)?)?(?!\w)(?<=[hmnsc])",
        _compact_duration,
        "time",
        first=r"\d",
    ),
    Rule(
        "clock",
        r"(?<![\w.:$/])(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?(?:\s?" + _AP + r")?(?![\d:])",
        _clock,
        "time",
        first=r"\d",
    ),
    Rule(
        "hour_meridiem",
        r"(?<![\w.:$/])(?P<h>\d{1,2})\s?" + _AP + r"(?!\w)",
        _hour_meridiem,
        "time",
        first=r"\d",
    ),
]
