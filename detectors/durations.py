"""Durations: the one parser and the one formatter of window lengths, policy durations and labels.

A duration is a number of seconds (``300``, ``"300"``, ``"1.5"``) or one or more
``<number><unit>`` parts with units ``s m h d w`` (``"90s"``, ``"5m"``, ``"1.5h"``,
``"1d12h"``; a space may separate a number from its unit, never two parts).
:func:`format_duration` writes the shortest exact form with the largest unit that divides
it; it is also the ``window`` label of every metric (``300 -> "5m"``, ``604800 -> "1w"``,
as Prometheus writes durations), so labels, policy texts and verdicts spell a window alike.

>>> parse_seconds("1d12h"), parse_duration("5m"), format_duration(259200), window_label(604800)
(129600.0, 300, '3d', '1w')
>>> format_duration(parse_duration("1.5h"))
'90m'
"""

from __future__ import annotations

import functools
import re
from typing import Any

__all__ = ["UNITS", "MAX_DURATION_S", "parse_seconds", "parse_duration", "format_duration", "window_label"]

#: seconds per unit, largest last
UNITS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: the longest duration :func:`parse_duration` accepts (400 days)
MAX_DURATION_S = 400 * 86400

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_PARTS = re.compile(r"(?:\d+(?:\.\d+)?\s*[smhdw])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


def parse_seconds(value: Any) -> float:
    """Seconds of a duration (see the module docstring); ``ValueError`` unless positive.

    >>> parse_seconds(90), parse_seconds("45"), parse_seconds("1h30m"), parse_seconds(" 5 m ")
    (90.0, 45.0, 5400.0, 300.0)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("duration must be a number of seconds or a string like '5m'")
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif _PARTS.fullmatch(text):
            seconds = sum(float(n) * UNITS[u] for n, u in _PART.findall(text))
        else:
            raise ValueError(f"bad duration {value!r}: not a duration like 30s, 5m, 1h30m, 3d or 1w")
    else:
        seconds = float(value)
    if not seconds > 0:
        raise ValueError("duration must be positive")
    return seconds


def parse_duration(value: Any, max_s: float = MAX_DURATION_S) -> int:
    """Whole seconds of a duration of at most ``max_s`` (policy fields, CLI options).

    >>> parse_duration("1h"), parse_duration(90), parse_duration("1.5m"), parse_duration("1w")
    (3600, 90, 90, 604800)
    """
    seconds = parse_seconds(value)
    if seconds > max_s:
        raise ValueError(f"duration longer than {format_duration(max_s)}")
    return int(round(seconds))


@functools.lru_cache(maxsize=256)
def format_duration(seconds: float) -> str:
    """Short label of a duration: ``3600 -> "1h"``, ``300 -> "5m"``, ``90 -> "90s"``.

    >>> [format_duration(w) for w in (300, 1800, 3600, 21600, 86400, 259200, 2592000, 604800, 90)]
    ['5m', '30m', '1h', '6h', '1d', '3d', '30d', '1w', '90s']
    """
    s = int(seconds)
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def format_age(seconds: float) -> str:
    """Compact elapsed time for tables (how long a breaker has held its state): two units at most.

    >>> format_age(42), format_age(725), format_age(3725), format_age(2 * 86400 + 7200)
    ('42s', '12m', '1h02m', '2d2h')
    """
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


#: the ``window`` label of a metric: the same spelling as policies and verdicts
window_label = format_duration
