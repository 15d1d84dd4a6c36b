"""``tripwire rules``: write the Prometheus burn-rate alerts generated from the policy (:mod:`streams.ops.rules`)."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from streams.cli.errors import load_cli_policy, policy_origin
from streams.cli.options import cli_settings, setting_option


@click.command()
@setting_option("--policy", "policy_file", setting="policy_file",
                type=click.Path(dir_okay=False, path_type=Path), help="Risk-budget policy YAML.")
@setting_option("--runbook-base-url", setting="runbook_base_url",
                help="Where docs/runbooks.md is published; alerts link <this>#<alertname in lower case>.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("deploy/prometheus/rules"), show_default=True,
              help="Directory to write tripwire-burn-rate.yml to.")
@click.option("--static", "static_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Also copy the hand-written rule files of this directory to --out, runbook links rebased.")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if the generated file in --out differs.")
@click.option("--config", type=click.Path(dir_okay=False), help="YAML config file.")
def rules(policy_file: Path | None, runbook_base_url: str | None, out_dir: Path, static_dir: Path | None,
          check: bool, config: str | None) -> None:
    """Generate the burn-rate alert rules from the policy: thresholds and windows from its budgets, gated
    on the breaker's minimum evidence (tripwire_budget_evidence_sufficient)."""
    from streams.ops.rules import GENERATED_FILE, render, write_rules

    settings = cli_settings(config=config, policy_file=policy_file, runbook_base_url=runbook_base_url)
    from_flag = click.get_current_context().get_parameter_source("policy_file") == ParameterSource.COMMANDLINE
    policy = load_cli_policy(settings.policy_file, policy_origin(settings, from_flag, config))
    source = Path(settings.policy_file).name
    if check:
        target = out_dir / GENERATED_FILE
        current = target.read_text(encoding="utf-8") if target.is_file() else ""
        if current != render(policy, settings.runbook_base_url, source):
            raise click.ClickException(f"{target} is out of date: run tripwire rules --out {out_dir}")
        click.echo(f"{target} is up to date")
        return
    for path in write_rules(policy, out_dir, settings.runbook_base_url, source, static_dir):
        click.echo(f"wrote {path}")


COMMANDS = [rules]
