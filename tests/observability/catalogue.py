"""The metric catalogue (docs/metrics.md) and the recording rules, as data for the tests."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
METRICS_MD = REPO / "docs" / "metrics.md"
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"

# Built-in series Prometheus itself provides for every scrape target.
# `ALERTS` is the series Prometheus writes for pending/firing alerts of loaded rules.
PROMETHEUS_BUILTINS = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"})

_ROW = re.compile(r"^\|\s*`(tripwire_[a-z0-9_]+)`\s*\|\s*(counter|gauge|histogram|summary)\s*\|")


@lru_cache(maxsize=None)
def catalogue() -> dict[str, str]:
    """{metric name: type} parsed from the tables of docs/metrics.md."""
    out: dict[str, str] = {}
    for line in METRICS_MD.read_text(encoding="utf-8").splitlines():
        m = _ROW.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


@lru_cache(maxsize=None)
def exposed_series_names() -> frozenset[str]:
    """Names that can appear in PromQL: counters/gauges as-is, histograms as _bucket/_sum/_count."""
    names: set[str] = set()
    for name, typ in catalogue().items():
        if typ in ("histogram", "summary"):
            names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
            if typ == "summary":
                names.add(name)
        else:
            names.add(name)
    return frozenset(names)


def rule_groups() -> list[dict]:
    groups: list[dict] = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        groups.extend(yaml.safe_load(path.read_text(encoding="utf-8"))["groups"])
    return groups


@lru_cache(maxsize=None)
def recording_rule_names() -> frozenset[str]:
    return frozenset(r["record"] for g in rule_groups() for r in g["rules"] if "record" in r)


def alert_rules() -> list[dict]:
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


def allowed_names() -> frozenset[str]:
    return exposed_series_names() | recording_rule_names() | PROMETHEUS_BUILTINS


# --- PromQL name extraction ------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_SET = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)")
_PROMQL_WORDS = frozenset(
    """
    sum min max avg group stddev stdvar count count_values bottomk topk quantile
    by without on ignoring group_left group_right bool and or unless offset
    inf nan e
    abs absent absent_over_time ceil changes clamp clamp_max clamp_min day_of_month day_of_week
    day_of_year days_in_month delta deriv exp floor histogram_count histogram_sum histogram_fraction
    histogram_quantile holt_winters hour idelta increase irate label_join label_replace ln log2
    log10 minute month predict_linear rate resets round scalar sgn sort sort_desc sqrt time
    timestamp vector year avg_over_time min_over_time max_over_time sum_over_time count_over_time
    quantile_over_time stddev_over_time stdvar_over_time last_over_time present_over_time
    acos acosh asin asinh atan atanh cos cosh sin sinh tan tanh deg rad pi
    """.split()
)


def metric_names(expr: str) -> set[str]:
    """Metric (or recording-rule) names referenced by a PromQL expression.

    Strings, label matchers, grouping clauses and range/subquery selectors are removed first; what
    remains that is an identifier and not a PromQL keyword/function is a metric name. Also picks up
    ``{__name__="..."}`` selectors.
    """
    names = set(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    s = _STRING.sub('""', expr)
    s = _LABEL_SET.sub(" ", s)
    s = _RANGE.sub(" ", s)
    # grouping / matching label lists: by (a, b), without (...), on (...), group_left (...)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", s)
    for m in _IDENT.finditer(s):
        word = m.group(1)
        if word.lower() in _PROMQL_WORDS:
            continue
        # a function call we do not know would still be followed by "(": treat as function
        rest = s[m.end():].lstrip()
        if rest.startswith("(") and word not in recording_rule_names():
            continue
        names.add(word)
    # durations like 5m inside expressions were removed with the ranges; numbers never match _IDENT
    return names
