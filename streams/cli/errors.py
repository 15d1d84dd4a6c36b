"""Configuration, policy and environment mistakes as ONE line with the place and the fix, exit status 2.

Every command resolves its settings through :func:`streams.cli.options.cli_settings`, which turns
the mistakes below into a :class:`ConfigProblem` (click prints ``Error: <line>`` and exits 2, no
traceback); commands that run a policy load it with :func:`load_cli_policy`.

========================================  ===============================================================
mistake                                   the one line (``Error: …``)
========================================  ===============================================================
config YAML syntax error                  ``cfg.yaml:3:1: YAML syntax error in the config file: …; fix …``
``TRIPWIRE_CONFIG`` / file missing        ``config file nope.yaml (from TRIPWIRE_CONFIG) does not exist; …``
bad setting value (env, file or flag)     ``invalid configuration: TRIPWIRE_WEB_PORT: web_port: …; fix …``
unknown key in the config file            ``invalid configuration: cfg.yaml:2:1: unknown setting 'web_prot' …``
policy file missing                       ``policy file p.yaml (from TRIPWIRE_POLICY_FILE) does not exist; …``
policy YAML syntax / validation           ``p.yaml:4:16: budgets[0].objective: …; fix the policy (…)``
misspelt ``TRIPWIRE_*`` variable          a warning: ``unknown environment variable TRIPWIRE_WEB_PROT …``
========================================  ===============================================================

>>> suggest("TRIPWIRE_WEB_PROT", ["TRIPWIRE_WEB_PORT", "TRIPWIRE_WEB_HOST"])
' (did you mean TRIPWIRE_WEB_PORT?)'
>>> yaml_mark("a:\\n  b: [1, 2]\\n", ("a", "b", 1))
(2, 10)
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import click

#: exit status of every configuration, policy and environment mistake (click's usage errors use it too)
CONFIG_EXIT = 2
#: ``TRIPWIRE_*`` variables read outside the settings model and the CLI's options (tests, Compose)
OTHER_ENV = ("TRIPWIRE_CONFIG", "TRIPWIRE_SHARED_DATA", "TRIPWIRE_IMAGE", "TRIPWIRE_INGEST_TOKEN")
#: prefixes Kubernetes injects for a Service named ``tripwire`` (docs: deploy/k8s/statefulset.yaml)
K8S_SERVICE_PREFIXES = ("TRIPWIRE_SERVICE_", "TRIPWIRE_PORT")


class ConfigProblem(click.ClickException):
    """A configuration, policy or environment mistake: one line, exit status 2."""

    exit_code = CONFIG_EXIT

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # one line, whatever the parts contained


def suggest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest known name, else ``''``."""
    hit = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f" (did you mean {hit[0]}?)" if hit else ""


def yaml_mark(text: str, loc: tuple[Any, ...]) -> tuple[int, int] | None:
    """1-based (line, column) of the node at ``loc`` (keys and list indexes) in a YAML text, or of its
    nearest existing parent; None when the text does not parse or ``loc`` is not in it at all."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    best: tuple[int, int] | None = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)),
                       None)
            if nxt is None:
                break
            key, node = nxt
            best = (key.start_mark.line + 1, key.start_mark.column + 1)
            if not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
                best = (node.start_mark.line + 1, node.start_mark.column + 1)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            best = (node.start_mark.line + 1, node.start_mark.column + 1)
        else:
            break
    return best


def yaml_syntax_problem(exc: Exception, file: str, what: str) -> ConfigProblem:
    """``file:line:col: YAML syntax error in <what>: <problem>; fix it`` from a PyYAML error."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark is not None else file
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    detail = f"{problem} ({context})" if context else problem
    return ConfigProblem(f"{where}: YAML syntax error in {what}: {detail}; fix the YAML at that line")


# ------------------------------------------------------------------ environment variables
def _settings_env_names() -> tuple[set[str], set[str]]:
    """(exact names, prefixes of free-form blocks) of the settings model's ``TRIPWIRE_*`` variables."""
    import typing

    from pydantic import BaseModel

    from streams.settings import DrillSLO, Settings

    exact: set[str] = set()
    free: set[str] = set()
    for name, field in Settings.model_fields.items():
        top = f"TRIPWIRE_{name.upper()}"
        exact.add(top)
        ann = field.annotation
        origin = typing.get_origin(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            exact.update(f"{top}__{sub.upper()}" for sub in ann.model_fields)
        elif origin is dict:
            free.add(f"{top}__")
    exact.update(f"TRIPWIRE_DRILL_SLO_{sub.upper()}" for sub in DrillSLO.model_fields)
    return exact, free


def _cli_env_names() -> set[str]:
    """Every ``envvar`` of the running command tree (``TRIPWIRE_API``, ``TRIPWIRE_PROMETHEUS_URL`` …)."""
    ctx = click.get_current_context(silent=True)
    out: set[str] = set()
    if ctx is None:
        return out

    def walk(cmd: click.Command) -> None:
        for p in cmd.params:
            envs = p.envvar if isinstance(p.envvar, (list, tuple)) else [p.envvar]
            out.update(e for e in envs if isinstance(e, str))
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(ctx.find_root().command)
    return out


def unknown_env(environ: Mapping[str, str]) -> list[str]:
    """One warning line per ``TRIPWIRE_*`` variable that nothing reads, with a did-you-mean."""
    exact, free = _settings_env_names()
    known = exact | _cli_env_names() | set(OTHER_ENV) | {"TRIPWIRE_TOKEN", "TRIPWIRE_API"}
    out: list[str] = []
    for key in sorted(environ):
        name = key.upper()
        if not name.startswith("TRIPWIRE_") or name in known or name.startswith(K8S_SERVICE_PREFIXES):
            continue
        if any(name.startswith(p) and len(name) > len(p) for p in free):
            continue
        if "__" in name and name.split("__", 1)[0] in exact:
            continue  # an unknown nested key is a validation error of its block, reported with a suggestion
        out.append(f"warning: unknown environment variable {key}, ignored{suggest(name, known)}")
    return out


_warned = False


def warn_unknown_env(environ: Mapping[str, str] | None = None) -> None:
    """Print :func:`unknown_env`'s warnings on stderr, once per process."""
    global _warned
    if _warned:
        return
    _warned = True
    for line in unknown_env(os.environ if environ is None else environ):
        click.echo(line, err=True)


# ------------------------------------------------------------------ settings errors
def config_origin(config: str | os.PathLike[str] | None) -> tuple[str | None, str]:
    """(the config file in force, where it was named: ``--config`` or ``TRIPWIRE_CONFIG``)."""
    if config is not None:
        return str(config), "--config"
    env = os.environ.get("TRIPWIRE_CONFIG") or None
    return env, "TRIPWIRE_CONFIG"


def check_config_file(config: str | os.PathLike[str] | None) -> None:
    """A named config file must exist and be YAML; raise :class:`ConfigProblem` otherwise."""
    import yaml

    file, origin = config_origin(config)
    if file is None:
        return
    path = Path(file)
    if not path.is_file():
        raise ConfigProblem(f"config file {file} (from {origin}) does not exist; point {origin} at a YAML "
                            "settings file or unset it")
    try:
        yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise yaml_syntax_problem(exc, file, "the config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigProblem(f"config file {file} (from {origin}) cannot be read: {exc}") from None


def _field_names(loc: tuple[Any, ...]) -> list[str]:
    from pydantic import BaseModel

    from streams.settings import Settings

    model: Any = Settings
    names: list[str] = []
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        ann = field.annotation if field is not None else None
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None:
            return names
    if isinstance(model, type):
        names = list(model.model_fields)
    return names


def settings_problem(exc: Any, config: str | os.PathLike[str] | None, overrides: Mapping[str, Any],
                     environ: Mapping[str, str] | None = None) -> ConfigProblem:
    """One line for a pydantic ``ValidationError`` of the settings: where each bad value came from
    (``--flag``, ``TRIPWIRE_*`` variable, ``file:line:col`` of the config file) and what is wrong."""
    env = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
    file, _ = config_origin(config)
    text = None
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            text = None
    parts: list[str] = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc) or "settings"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            names = _field_names(loc)
            hint = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
            msg = f"unknown setting {dotted!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        source = None
        if loc and str(loc[0]) in overrides:
            source = "--" + str(loc[0]).replace("_", "-")
        else:
            for n in range(len(loc), 0, -1):
                name = "TRIPWIRE_" + "__".join(str(p).upper() for p in loc[:n])
                if name in env:
                    source = name
                    break
            if source is None and loc and str(loc[0]) == "drill_slo" and len(loc) > 1:
                name = f"TRIPWIRE_DRILL_SLO_{str(loc[1]).upper()}"
                source = name if name in env else None
            if source is None and text is not None and loc:
                mark = yaml_mark(text, loc)
                if mark is not None:
                    source = f"{file}:{mark[0]}:{mark[1]}"
        if source is None:
            parts.append(f"{dotted}: {msg}")
        else:
            parts.append(f"{source}: {dotted}: {msg}")
    fix = "fix or unset the value named above" if len(parts) == 1 else "fix or unset the values named above"
    return ConfigProblem(f"invalid configuration: {'; '.join(parts)}; {fix} "
                         "(every setting: streams/settings.py, `tripwire config show`)")


# ------------------------------------------------------------------ policy
def policy_origin(settings: Any, flag_given: bool, config: str | os.PathLike[str] | None) -> str:
    """Where the policy file of ``settings`` was named (for the error line)."""
    from streams.settings import DEFAULT_POLICY

    if flag_given:
        return "--policy"
    if "TRIPWIRE_POLICY_FILE" in {k.upper() for k in os.environ}:
        return "TRIPWIRE_POLICY_FILE"
    file, _ = config_origin(config)
    if file is not None and Path(settings.policy_file) != Path(DEFAULT_POLICY):
        return f"policy_file in {file}"
    return "the shipped default"


def load_cli_policy(path: Path, origin: str) -> Any:
    """The policy at ``path`` or a :class:`ConfigProblem`: missing file, YAML syntax, validation (first
    error with file:line:col, how many more, and the command that lists them all)."""
    from breakers.policy import PolicyInvalid, load_policy

    path = Path(path)
    if not path.is_file():
        raise ConfigProblem(f"policy file {path} (from {origin}) does not exist; point {origin} at a policy "
                            "YAML or unset it to use the shipped default policy")
    try:
        return load_policy(path)
    except PolicyInvalid as exc:
        first = exc.errors[0] if exc.errors else str(exc)
        more = f" (+{len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""
        raise ConfigProblem(f"{first}{more}; fix the policy (from {origin}); "
                            f"`tripwire policy check {path}` lists every problem") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigProblem(f"policy file {path} (from {origin}) cannot be read: {exc}") from None
