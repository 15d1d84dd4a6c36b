"""``tripwire drill`` and ``tripwire backtest``.

``tripwire drill`` runs against a running deployment (defaults fit ``tripwire up``), or with
``--embedded`` starts its own broker and workers first, which the chaos variant needs:
``--embedded --kill-worker`` runs two workers and SIGKILLs the one that owns the drill agent
right after the spike, then checks everything through the survivor.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from streams.cli.options import DEFAULT_API, emit_json, json_option, setting_option
from streams.settings import DEFAULTS

# ---------------------------------------------------------------------------------- embedded stack

@dataclass
class EmbeddedStack:
    """A broker and N ``tripwire worker`` processes started by the drill (``--embedded``), on the dev stack."""

    data_dir: Path
    workers: int = 1
    alertmanager: str | None = None
    broker: Any = None
    procs: list[Any] = field(default_factory=list)
    webs: list[str] = field(default_factory=list)
    token: str = ""
    dev: Any = None

    def start(self, say: Any = lambda m: None) -> None:
        from breakers.operators import generate_token, hash_token
        from streams.ops.devstack import DEV_PARTITIONS, DevStack, WorkerExited, topics_env

        self.dev = DevStack(self.data_dir)
        self.broker = self.dev.broker
        say(f"starting the embedded broker on {self.broker.bootstrap}")
        self.dev.start_broker()
        self.dev.create_topics(DEFAULTS.model_copy(update={"partitions": DEV_PARTITIONS}))
        self.token = generate_token()
        env = {**topics_env(DEFAULTS.topics),
               "TRIPWIRE_OPERATORS": json.dumps([{"name": "drill-admin", "role": "admin",
                                                  "token_sha256": hash_token(self.token)}]),
               "TRIPWIRE_APP_ID": "tripwire-drill", "PYTHONUNBUFFERED": "1"}
        if self.alertmanager:
            env["TRIPWIRE_ALERTMANAGER_URL"] = self.alertmanager
        for i in range(self.workers):
            self.dev.add_worker(data_dir=self.data_dir / f"w{i}", log=self.data_dir / f"worker-{i}.log", env=env,
                                partitions=DEV_PARTITIONS)
        self.procs = [w.proc for w in self.dev.workers]
        self.webs = self.dev.webs
        say(f"starting {self.workers} worker(s); logs in {self.data_dir}")
        try:
            self.dev.wait_ready(timeout=120)
        except WorkerExited as exc:
            raise click.ClickException(f"a worker exited: {exc}") from None

    def stop(self) -> None:
        if self.dev is not None:
            self.dev.stop(worker_timeout=5)


def _has_agent(web: str, agent: str) -> bool:
    """Does the worker at ``web`` hold ``agent``'s detectors (i.e. own its partition)?"""
    import httpx

    try:
        text = httpx.get(f"{web}/metrics", timeout=2).text
    except httpx.HTTPError:
        return False
    return f'agent="{agent}"' in text


def _decided(webs: list[str], scope: str, token: str) -> bool:
    """Has any worker recorded a non-closed state for ``scope``?"""
    from urllib.parse import quote

    import httpx

    for web in webs:
        try:
            r = httpx.get(f"{web}/v1/breakers/{quote(scope, safe='')}", timeout=1,
                          headers={"Authorization": f"Bearer {token}"} if token else {})
            if r.status_code == 200 and r.json().get("state") not in (None, "closed"):
                return True
        except (httpx.HTTPError, ValueError):
            continue
    return False


def kill_worker_hooks(stack: EmbeddedStack, timeout_s: float = 60.0) -> dict[str, Any]:
    """Chaos hooks for :class:`streams.ops.drill.Drill`: SIGKILL the drill agent's owner after the spike."""
    from streams.ops.procutil import wait_until

    def after_spike(drill: Any, _: str) -> None:
        agent = drill.ds.agent
        # kill mid-drill: once the owner has decided (the survivor then holds the breaker state
        # from breaker-state and must enforce it). Killing before the decision would only measure
        # the group's session timeout: the survivor re-reads the spike (its offsets were never
        # committed) and decides ~15 s later.
        try:
            wait_until(lambda: _decided(stack.webs, drill.watch_scope, stack.token), timeout=10, interval=0.05,
                       what="the owner's decision")
        except TimeoutError:
            pass
        owner = None
        deadline = time.monotonic() + 15
        while owner is None and time.monotonic() < deadline:
            owner = next((i for i, w in enumerate(stack.webs) if _has_agent(w, agent)), None)
            if owner is None:
                time.sleep(0.05)
        victim = owner if owner is not None else 0
        proc = stack.procs[victim]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        survivor = next(i for i in range(len(stack.webs)) if i != victim)
        drill.api = stack.webs[survivor]
        drill.result.targets["api"] = drill.api
        drill.result.chaos["kill_worker"] = {"killed": stack.webs[victim], "owned_drill_agent": owner is not None,
                                             "killed_at": time.time(), "survivor": stack.webs[survivor]}

    def before_recovery(drill: Any, _: str) -> None:
        info = drill.result.chaos.get("kill_worker", {})
        started = time.time()
        try:  # the survivor must own the drill agent before the reset, or a re-read of the spike re-trips it
            wait_until(lambda: _has_agent(info["survivor"], drill.ds.agent), timeout=timeout_s, interval=0.25,
                       what="the survivor to take over the drill agent's partition")
            info["failover_s"] = round(time.time() - info.get("killed_at", started), 3)
        except TimeoutError as exc:
            info["failover_error"] = str(exc)

    return {"after_spike": after_spike, "before_recovery": before_recovery}


def restart_broker_hooks(stack: EmbeddedStack, outage_s: float = 5.0, ready_slo_s: float = 60.0) -> dict[str, Any]:
    """Chaos hooks: once the breaker acts, SIGKILL the embedded broker, start it again, check the workers.

    The embedded broker is memory-only, so its restart loses every topic and record. What the drill
    proves is the behaviour, not durability: during the outage ``/v1/authz`` keeps denying from the
    last known state and ``/readyz`` reports the outage; after the restart the workers reconnect by
    themselves, recreate the topics, re-publish the breaker states they hold and become ready, and
    the breaker still denies. Recorded as the step ``broker_restart``.
    """
    import httpx

    from streams.ops.drill import FAIL, PASS, StepResult
    from streams.ops.procutil import wait_until

    def before_recovery(drill: Any, _: str) -> None:
        info: dict[str, Any] = {}
        drill.result.chaos["restart_broker"] = info
        drill.on_phase("chaos: killing the embedded broker")
        killed_at = time.time()
        stack.broker.kill()
        during: list[int] = []
        outage_reported = False
        while time.time() - killed_at < outage_s:
            try:
                during.append(drill._authz().status_code)
                outage_reported |= httpx.get(f"{drill.api}/readyz", timeout=1).status_code == 503
            except httpx.HTTPError:
                during.append(0)
            time.sleep(0.2)
        drill.on_phase("chaos: starting the broker again (empty: memory-only)")
        stack.broker.start()
        drill.result.chaos["watcher_stale"] = True

        def all_ready() -> bool:
            try:
                return all(httpx.get(f"{w}/readyz", timeout=1).status_code == 200 for w in stack.webs)
            except httpx.HTTPError:
                return False

        try:
            wait_until(all_ready, timeout=ready_slo_s, interval=0.25, what="the workers to reconnect")
            ready_s: float | None = time.time() - killed_at
        except TimeoutError:
            ready_s = None
        after = drill._authz().status_code
        info.update(killed_at=killed_at, outage_s=outage_s, authz_during=sorted(set(during)),
                    readyz_reported_outage=outage_reported, ready_after_s=ready_s, authz_after=after)
        ok = bool(during) and set(during) == {403} and outage_reported and ready_s is not None and after == 403
        detail = (f"authz during outage {sorted(set(during))}, /readyz reported it: {outage_reported}, "
                  f"workers ready {ready_s:.1f}s after the kill" if ready_s is not None else
                  f"authz during outage {sorted(set(during))}; workers not ready within {ready_slo_s:.0f}s")
        drill._record(StepResult("broker_restart", PASS if ok else FAIL, ready_s, ready_slo_s,
                                 detail + f", authz after {after}"))

    return {"before_recovery": before_recovery}


# ---------------------------------------------------------------------------------- drill

@click.command("drill")
@click.option("--scope", help="Drill scope agent:drill-…/tool:…; default agent:drill-bot-<run id>/tool:shell "
              "(a fresh agent id per run, so drills never see each other's windows).")
@click.option("--profile", type=click.Choice(["near-miss-spike", "incident-burst", "drift"]),
              default="near-miss-spike", show_default=True)
@setting_option("--broker", setting="broker",
                help="Kafka bootstrap URL of the deployment; TLS/SASL from TRIPWIRE_KAFKA__*.")
@click.option("--api", envvar="TRIPWIRE_API", show_envvar=True, default=DEFAULT_API, show_default=True,
              help="A worker's HTTP base URL (authz, operator API).")
@setting_option("--alertmanager", setting="alertmanager_url", show_default=False,
                help="Alertmanager base URL; without it the alert steps are SKIPPED.")
@click.option("--token", help="Operator token for the reset (else env TRIPWIRE_TOKEN, else .tripwire/admin.token).")
@click.option("--token-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where admin.token is looked for (default: the data_dir setting, TRIPWIRE_DATA_DIR, .tripwire).")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("drill-reports"),
              show_default=True)
@click.option("--slo-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML with open_s / deny_s / alert_s / recovery_s / grace_s (env TRIPWIRE_DRILL_SLO_*).")
@click.option("--slo-open", type=float, help="Override: spike → breaker open, seconds.")
@click.option("--slo-deny", type=float, help="Override: open → authz deny, seconds.")
@click.option("--slo-alert", type=float, help="Override: open → alert (and reset → resolved), seconds.")
@click.option("--slo-recovery", type=float, help="Override: reset → closed / allowed, seconds.")
@click.option("--grace", type=float, help="Keep waiting this long past an SLO to report the real time.")
@setting_option("--traces-topic", setting="topics.traces")
@setting_option("--state-topic", setting="topics.breaker_state")
@setting_option("--events-topic", setting="topics.breaker_events")
@click.option("--embedded", is_flag=True, help="Start an embedded broker and workers for this drill.")
@click.option("--kill-worker", is_flag=True, help="Chaos (needs --embedded): two workers, SIGKILL the drill "
              "agent's owner after the spike; the drill must pass through the survivor.")
@click.option("--restart-broker", is_flag=True, help="Chaos (needs --embedded): once the breaker acts, kill the "
              "memory-only embedded broker and start it again; authz must keep denying and the workers recover.")
@json_option("The JSON result to FILE, or to stdout instead of the table when no FILE is given.")
def drill(scope: str | None, profile: str, broker: str | None, api: str, alertmanager: str | None,
          token: str | None, token_dir: Path | None, report_dir: Path, slo_file: Path | None, slo_open: float | None,
          slo_deny: float | None, slo_alert: float | None, slo_recovery: float | None, grace: float | None,
          traces_topic: str | None, state_topic: str | None, events_topic: str | None, embedded: bool,
          kill_worker: bool, restart_broker: bool, json_out: str | None) -> None:
    """Run a circuit-breaker drill and report PASS/FAIL per step (exit 1 on any FAIL)."""
    from rich.console import Console

    from streams.cli.options import cli_settings, kafka_security
    from streams.kafka.security import KafkaSecurity
    from streams.ops import drill_report
    from streams.ops.drill import Drill, DrillConfig, DrillError, find_token, report_result
    from streams.settings import DrillSLO

    as_json = json_out == "-"
    console = Console(stderr=as_json)
    if kill_worker and not embedded:
        raise click.UsageError("--kill-worker needs --embedded (the drill must own the worker processes)")
    if restart_broker and not embedded:
        raise click.UsageError("--restart-broker needs --embedded (only the drill's own broker may be restarted)")
    if restart_broker and kill_worker:
        raise click.UsageError("run --kill-worker and --restart-broker as separate drills")
    try:
        slo = DrillSLO.load(slo_file, open_s=slo_open, deny_s=slo_deny, alert_s=slo_alert,
                            recovery_s=slo_recovery, grace_s=grace)
    except (DrillError, ValueError, OSError) as exc:
        raise click.ClickException(f"invalid drill SLOs: {exc}") from None
    stack: EmbeddedStack | None = None
    hooks: dict[str, Any] = {}
    signing: dict[str, Any] = {}
    if embedded:
        stack = EmbeddedStack(Path(tempfile.mkdtemp(prefix="tripwire-drill-")), workers=2 if kill_worker else 1,
                              alertmanager=alertmanager)
        try:
            stack.start(say=lambda m: console.print(f"[dim]{m}[/dim]"))
        except Exception:
            stack.stop()
            raise
        api, token = stack.webs[-1], stack.token
        bootstrap, topics = stack.broker.bootstrap, DEFAULTS.topics
        security = KafkaSecurity()  # the embedded broker is loopback plaintext
        if kill_worker:
            hooks = kill_worker_hooks(stack)
        elif restart_broker:
            hooks = restart_broker_hooks(stack)
    else:
        chosen = {"traces": traces_topic, "breaker_state": state_topic, "breaker_events": events_topic}
        settings = cli_settings(broker=broker, topics={k: v for k, v in chosen.items() if v} or None)
        token = find_token(token, dict(os.environ), token_dir if token_dir is not None else Path(settings.data_dir))
        bootstrap, topics, security = settings.bootstrap, settings.topics, kafka_security(settings)
        if settings.drill_key_id:  # the worker attests drill traffic only when signed with the drill key
            signing = {"signing_key_id": settings.drill_key_id,
                       "signing_key": settings.signing_keys[settings.drill_key_id].get_secret_value().encode()}
    events_topic = topics.breaker_events
    config = DrillConfig(bootstrap=bootstrap, api=api, alertmanager=alertmanager, scope=scope, profile=profile,
                         token=token, security=security, topics=topics, slo=slo, **signing)
    try:
        with console.status("starting the drill") as status:
            def on_step(step: Any) -> None:
                colour = {"PASS": "green", "FAIL": "red"}.get(step.status, "yellow")
                took = "" if step.seconds is None else f" {step.seconds:.2f}s"
                console.print(f"  [{colour}]{step.status:7}[/] {step.name}{took}  [dim]{step.detail}[/dim]")

            try:
                runner = Drill(config, on_step=on_step, on_phase=lambda p: status.update(p), hooks=hooks)
            except DrillError as exc:
                raise click.ClickException(str(exc)) from None
            console.print(f"drill [bold]{config.drill_id}[/bold]: {profile} on {runner.watch_scope}")
            try:
                result = runner.run()
            except DrillError as exc:
                raise click.ClickException(str(exc)) from None
            status.update("reporting the result")
            report_result(result, bootstrap, events_topic, runner.api, token, security)
    finally:
        if stack is not None:
            stack.stop()
    js, md = drill_report.write(result, report_dir)
    if json_out is not None:
        emit_json(result.to_dict(), json_out)
    if not as_json:
        console.print(drill_report.table(result))
        console.print(f"reports: {js}  {md}")
        if not result.passed:
            console.print(f"[bold red]drill FAILED at: {', '.join(result.failed_steps())}[/bold red]")
    sys.exit(0 if result.passed else 1)


# ---------------------------------------------------------------------------------- backtest

@click.command("backtest")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Policy YAML to test (default deploy/policy/default.yaml).")
@click.option("--traces", "traces_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Recorded trace events, JSONL (one event or batch per line).")
@click.option("--step", "step_s", default=10.0, show_default=True, help="Evaluate every N seconds of event time.")
@click.option("--label-burn", type=float, help="An agent is unsafe when its whole-file weighted near-miss burn "
              "reaches this multiple of the objective (default: the smallest paging burn rate of the policy).")
@json_option("Write the JSON report to FILE, or to stdout (instead of the table) when no FILE is given ('-' too).")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False, path_type=Path), help="Write a Markdown report here.")
def backtest(policy_file: Path | None, traces_file: Path, step_s: float, label_burn: float | None,
             json_out: str | None, md_out: Path | None) -> None:
    """Replay recorded traces through decode, detectors and breakers in event time (no broker)."""
    from rich.console import Console

    from streams.cli.errors import load_cli_policy
    from streams.ops.backtest import backtest as run_backtest
    from streams.ops.backtest import markdown, table
    from streams.settings import DEFAULT_POLICY

    pol = load_cli_policy(policy_file or DEFAULT_POLICY, "--policy" if policy_file else "the shipped default")
    report = run_backtest(pol, traces_file, step_s=step_s, label_burn=label_burn)
    doc = report.to_dict()
    if json_out is not None and str(json_out) == "-":
        emit_json(doc, json_out)
        return
    Console().print(table(report))
    if json_out is not None:
        emit_json(doc, json_out)
    if md_out is not None:
        md_out.write_text(markdown(report), encoding="utf-8")


COMMANDS = [drill, backtest]
