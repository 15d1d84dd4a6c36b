#!/usr/bin/env python3
"""Measure what the low-volume harm budget adds on the shipped trace files (numbers in default.yaml).

For each shipped file (ToolEmu, tau-bench, AgentDojo when present) this runs the in-process
`tripwire backtest` twice — with the policy, and with the policy minus the budget — and reports

* ``trips``: enforcing transitions whose budget is the measured one (scope, time, reason);
* ``changed``: scopes whose sequence of states differs between the two runs (the decisions the
  budget changes; the issue allows only trips the new rule adds);

and, because the shipped files carry no incidents at all, the same again on copies with critical
incidents injected after tool calls at a fixed share of the calls (seeded, so deterministic):
an agent at or below the 2% objective that trips is a false trip of this rule.

    .venv/bin/python deploy/policy/measure_low_volume_rule.py            # table
    .venv/bin/python deploy/policy/measure_low_volume_rule.py --json     # machine-readable

Needs the repository's virtualenv (imports ``streams``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from breakers.policy import DEFAULT_POLICY_PATH, Policy, parse_policy  # noqa: E402
from breakers.state_machine import ENFORCING  # noqa: E402
from streams.ops.backtest import BacktestReport, backtest  # noqa: E402

BUDGET = "critical-incidents-low-volume"
FILES = ("toolemu-trace-v1.jsonl", "taubench-airline-trace-v1.jsonl", "agentdojo-trace-v1.jsonl")
INJECT_RATES = (0.005, 0.01, 0.02)


def shared_data() -> Path:
    """Where the shipped trace files live (``TRIPWIRE_SHARED_DATA`` or ../shared/data)."""
    import os

    env = os.environ.get("TRIPWIRE_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data", Path("/work/shared/data")]:
        if cand.is_dir():
            return cand
    raise SystemExit("shared data directory not found (set TRIPWIRE_SHARED_DATA)")


def without_budget(policy_text: str, name: str) -> Policy:
    data = yaml.safe_load(policy_text)
    data["budgets"] = [b for b in data["budgets"] if b["name"] != name]
    return parse_policy(yaml.safe_dump(data, sort_keys=False), f"<policy without {name}>")


def inject(src: Path, dst: Path, rate: float, seed: int) -> int:
    """Copy ``src`` to ``dst`` adding a critical incident 1 ms after a share ``rate`` of tool calls."""
    rng = random.Random(f"{seed}:{rate}:{src.name}")
    n = 0
    with src.open("rb") as fin, dst.open("wb") as fout:
        for line in fin:
            fout.write(line)
            if not line.strip():
                continue
            ev = orjson.loads(line)
            if ev.get("kind") != "tool_call" or rng.random() >= rate:
                continue
            n += 1
            inc = {"schema_version": "1", "event_id": f"inj-{n:06d}-{ev['event_id'][:16]}",
                   "ts": int(ev["ts"]) + 1, "agent_id": ev["agent_id"], "kind": "incident",
                   "severity": "critical", "tool": ev.get("tool"), "tool_call_id": ev.get("tool_call_id")}
            fout.write(orjson.dumps({k: v for k, v in inc.items() if v is not None}) + b"\n")
    return n


def _paths(report: BacktestReport) -> dict[str, list[str]]:
    return {s: o.states for s, o in report.scopes.items()}


def compare(policy: Policy, base: Policy, path: Path) -> dict[str, Any]:
    with_b = backtest(policy, path)
    without = backtest(base, path)
    trips = [t for t in with_b.transitions if t["budget"] == BUDGET and t["to"] in ENFORCING
             and t["action"] in ("trip", "reopen")]
    a, b = _paths(with_b), _paths(without)
    changed = sorted(s for s in set(a) | set(b) if a.get(s) != b.get(s))
    agents = sorted(with_b.agents)
    tripped_agents = sorted({t["scope"] for t in trips if "/" not in t["scope"]})
    return {"file": path.name, "agents": len(agents), "events": with_b.events,
            "trips": [{"scope": t["scope"], "ts": t["ts"], "action": t["action"], "reason": t["reason"]} for t in trips],
            "agents_tripped_by_budget": tripped_agents,
            "scopes_tripped_by_budget": sorted({t["scope"] for t in trips}),
            "agents_open_without_budget": sorted(s for s, st in b.items() if "/" not in s and "open" in st),
            "changed_scopes": changed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", type=Path, default=DEFAULT_POLICY_PATH)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rates", default=",".join(str(r) for r in INJECT_RATES))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    text = args.policy.read_text(encoding="utf-8")
    policy = parse_policy(text, str(args.policy))
    base = without_budget(text, BUDGET)
    data = args.data or shared_data()
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in FILES:
            src = data / name
            if not src.exists():
                continue
            row = compare(policy, base, src)
            row["injected_rate"], row["injected"] = 0.0, 0
            out.append(row)
            for rate in (float(r) for r in args.rates.split(",") if r):
                dst = Path(tmp) / f"{rate}-{name}"
                n = inject(src, dst, rate, args.seed)
                row = compare(policy, base, dst)
                row["file"], row["injected_rate"], row["injected"] = name, rate, n
                out.append(row)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{'file':34} {'inject':>6} {'incid.':>6} {'agents':>6} {'tripped by rule (agents/scopes)':>32} "
          f"{'agents open w/o rule':>20} {'changed scopes':>14}")
    for r in out:
        print(f"{r['file']:34} {r['injected_rate']:6.3f} {r['injected']:6d} {r['agents']:6d} "
              f"{len(r['agents_tripped_by_budget']):>14}/{len(r['scopes_tripped_by_budget']):<17} "
              f"{len(r['agents_open_without_budget']):20d} {len(r['changed_scopes']):14d}")
        for a in r["agents_tripped_by_budget"]:
            print(f"    tripped: {a}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
