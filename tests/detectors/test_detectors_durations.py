"""detectors.durations: the one parser and formatter of durations and window labels."""

from __future__ import annotations

import pytest

from detectors.durations import format_duration, parse_duration, parse_seconds, window_label


@pytest.mark.parametrize("value,seconds", [(30, 30.0), ("30", 30.0), ("1.5", 1.5), ("45s", 45.0), ("5 m", 300.0),
                                           ("1h30m", 5400.0), ("1d12h", 129600.0), ("2w", 1209600.0)])
def test_parse_seconds(value, seconds):
    assert parse_seconds(value) == seconds


@pytest.mark.parametrize("value", [0, -1, "", "h", "1x", "-5", "0", "1h 2m", "5 minutes", "1e3", "inf", True, None, [1]])
def test_bad_durations(value):
    with pytest.raises(ValueError):
        parse_seconds(value)


def test_parse_duration_rounds_and_caps():
    assert parse_duration("0.5h") == 1800 and parse_duration(90.4) == 90
    assert parse_duration("400d") == 400 * 86400
    with pytest.raises(ValueError, match="longer than"):
        parse_duration("401d")
    with pytest.raises(ValueError):
        parse_duration("2h", max_s=3600)


def test_one_spelling_for_labels_and_policies():
    # a week is "1w" (as Prometheus writes durations); labels the dashboards use are unchanged
    assert window_label is format_duration
    assert [format_duration(s) for s in (300, 1800, 3600, 21600, 86400, 259200, 2592000)] == \
        ["5m", "30m", "1h", "6h", "1d", "3d", "30d"]
    assert format_duration(604800) == "1w" and format_duration(1209600) == "2w" and format_duration(90) == "90s"
    for s in (45, 300, 5400, 86400, 604800, 2592000):
        assert parse_duration(format_duration(s)) == s
