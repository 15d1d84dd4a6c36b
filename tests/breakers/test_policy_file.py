from __future__ import annotations

import textwrap

import pytest

from breakers.policy import (
    PolicyInvalid, check_policy_text, format_duration, load_policy, parse_duration, parse_policy,
)

from helpers.breakers import DEFAULT_POLICY


def errs(text: str):
    return check_policy_text(textwrap.dedent(text), "p.yaml")


def test_default_policy_is_valid(default_policy):
    assert check_policy_text(DEFAULT_POLICY.read_text(), str(DEFAULT_POLICY)) == []
    names = [b.name for b in default_policy.budgets]
    assert {"critical-incidents", "weighted-near-miss"} <= set(names)
    assert default_policy.fail_mode == "closed"
    for tool in ("payments.refund", "shell", "email.send", "db.write", "db.write_many"):
        assert default_policy.is_consequential(tool)
    assert not default_policy.is_consequential("db.read")
    assert default_policy.policy_version.startswith("sha256:")


def test_version_from_file_or_content_hash():
    assert parse_policy("version: v7\n").policy_version == "v7"
    a, b = parse_policy("budgets: []\n"), parse_policy("budgets: []  # changed\n")
    assert a.policy_version != b.policy_version and a.policy_version.startswith("sha256:")
    assert parse_policy("budgets: []\n").policy_version == a.policy_version


def test_defaults_are_sre_multiwindow():
    p = parse_policy("budgets: [{name: b, signal: near_miss_rate, scopes: ['agent:*'], objective: 0.05}]")
    w = [(r.long, r.short, r.burn_rate, r.severity) for r in p.budgets[0].windows]
    assert w == [(3600, 300, 14.4, "page"), (21600, 1800, 6.0, "page"), (259200, 21600, 1.0, "ticket")]
    assert p.budgets[0].period == 30 * 86400


def test_error_location_path_and_line_column():
    e = errs("""\
        budgets:
          - name: a
            signal: near_miss_rate
            scopes: ["agent:*"]
            objective: 0.05
          - name: b
            signal: near_miss_rate
            scopes: ["agent:*"]
            objective: 0.05
          - name: c
            signal: near_miss_rate
            scopes: ["agent:*"]
            objective: 0.05
            windows:
              - long: 1h
                short: 5m
                burn_rate: -3
        """)
    assert len(e) == 1
    assert e[0].path == "budgets[2].windows[0].burn_rate"
    assert (e[0].line, e[0].column) == (17, 20)
    assert "greater than 0" in e[0].message
    assert str(e[0]).startswith("p.yaml:17:20: budgets[2].windows[0].burn_rate:")


def test_unknown_keys_are_errors_at_the_key():
    e = errs("""\
        fail_mode: closed
        bogus_top: 1
        budgets:
          - name: a
            signal: near_miss_rate
            scopes: ["agent:*"]
            objective: 0.05
            min_evidence: {min_calls: 3, typo: 1}
        """)
    by_path = {x.path: x for x in e}
    assert set(by_path) == {"bogus_top", "budgets[0].min_evidence.typo"}
    assert (by_path["bogus_top"].line, by_path["bogus_top"].column) == (2, 1)
    assert by_path["bogus_top"].message == "unknown key 'bogus_top'"
    assert by_path["budgets[0].min_evidence.typo"].line == 8


@pytest.mark.parametrize("snippet,path,fragment", [
    ("budgets: [{name: a, signal: rate, scopes: ['agent:*'], objective: 0.1}]", "budgets[0].signal", "Input should be"),
    ("budgets: [{name: a, signal: near_miss_rate, scopes: ['agent:*', 'nope'], objective: 0.1}]",
     "budgets[0].scopes[1]", "unknown scope form"),
    ("budgets: [{name: a, signal: near_miss_rate, scopes: [], objective: 0.1}]", "budgets[0].scopes", "at least 1"),
    ("budgets: [{name: a, signal: near_miss_rate, scopes: ['agent:*'], objective: 1.5}]", "budgets[0]", "≤ 1"),
    ("budgets: [{name: a, signal: cost, scopes: ['agent:*']}]", "budgets[0]", "objective is required"),
    ("budgets: [{name: a, signal: near_miss_rate, scopes: ['agent:*'], objective: 0.1, cooldown: soon}]",
     "budgets[0].cooldown", "bad duration"),
    ("budgets: [{name: a, signal: near_miss_rate, scopes: ['agent:*'], objective: 0.1, action: kill}]",
     "budgets[0].action", "Input should be"),
    ("budgets: [{name: a, signal: near_miss_rate, scopes: ['agent:*'], objective: 0.1, "
     "windows: [{long: 5m, short: 1h, burn_rate: 2}]}]", "budgets[0].windows[0]", "short window"),
    ("budgets: [{name: a, signal: near_miss_rate, scopes: ['agent:*'], objective: 0.1, "
     "min_evidence: {min_bad: 0}}]", "budgets[0].min_evidence.min_bad", "greater than or equal to 1"),
    ("budgets: [{name: a, signal: near_miss_rate, scopes: ['agent:*'], objective: 0.1, cooldown: 2h}]",
     "budgets[0]", "max_cooldown"),
    ("budgets: [{name: 'bad name!', signal: drift, scopes: ['*']}]", "budgets[0].name", "pattern"),
    ("fail_mode: maybe", "fail_mode", "Input should be"),
    ("approvals: {default_ttl: 9h, max_ttl: 1h}", "approvals", "default_ttl"),
])
def test_validation_errors(snippet, path, fragment):
    e = errs(snippet)
    assert e, snippet
    assert e[0].path == path, e
    assert fragment in e[0].message
    assert e[0].line is not None


def test_duplicate_budget_names_and_duplicate_keys():
    e = errs("""\
        budgets:
          - {name: a, signal: drift, scopes: ['*']}
          - {name: a, signal: drift, scopes: ['*']}
        """)
    assert len(e) == 1 and "duplicate budget name" in e[0].message
    e = errs("""\
        fail_mode: open
        fail_mode: closed
        """)
    assert e[0].message == "duplicate key" and e[0].line == 2


@pytest.mark.parametrize("text,msg", [
    ("budgets: [unclosed", "YAML syntax error"),
    ("- just\n- a list\n", "must be a YAML mapping"),
    ("key: @bad", "YAML syntax error"),
])
def test_yaml_level_errors(text, msg):
    e = check_policy_text(text, "x.yaml")
    assert len(e) == 1 and msg in e[0].message and e[0].line is not None


def test_empty_file_is_an_empty_policy():
    assert check_policy_text("", "e.yaml") == []
    assert parse_policy("").budgets == []


def test_oversized_policy_rejected():
    assert "larger than" in check_policy_text("#" * (2 << 20))[0].message


def test_load_policy_raises_with_errors(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("fail_mode: maybe\n")
    with pytest.raises(PolicyInvalid) as ei:
        load_policy(f)
    assert ei.value.errors[0].path == "fail_mode"
    assert ei.value.errors[0].to_dict()["line"] == 1


@pytest.mark.parametrize("value,seconds", [(30, 30), ("30", 30), ("45s", 45), ("5m", 300), ("1h", 3600),
                                           ("3d", 259200), ("1w", 604800), ("0.5h", 1800)])
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [0, -1, "", "5 minutes", True, None, "401d", [1]])
def test_bad_durations(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_format_duration():
    assert [format_duration(s) for s in (300, 1800, 3600, 21600, 259200, 45)] == ["5m", "30m", "1h", "6h", "3d", "45s"]


def test_budgets_for_and_caches(default_policy):
    assert [b.name for b in default_policy.budgets_for("agent:x/tool:shell")] == [
        "critical-incidents", "critical-incidents-low-volume", "weighted-near-miss"]
    assert default_policy.budgets_for("tool:shell") == ()
    assert default_policy.budgets_for("global") == ()


def test_alias_bomb_rejected_quickly():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i-1}"] * 10) + "]")
    e = check_policy_text("\n".join(lines) + "\n", "bomb.yaml")
    assert len(e) == 1 and "YAML nodes" in e[0].message


def test_aliases_allowed_in_normal_use():
    text = """\
        common: &scopes ["agent:*", "agent:*/tool:*"]
        budgets: [{name: a, signal: drift, scopes: *scopes}]
        """
    e = errs(text)
    assert [x.path for x in e] == ["common"]  # unknown top-level key, but the alias itself is fine
