"""Files shipped inside the distribution (package data) that the repository also keeps at its own paths.

The default policy lives at ``deploy/policy/default.yaml`` and the trace-event JSON Schema at
``schemas/trace-event-v1.json`` because docs, Kubernetes manifests and the Dockerfile point there.
An installed wheel has no ``deploy/`` or ``schemas/``: it carries copies as package data
(``breakers/data/``, ``streams/contract/data/``), read through :mod:`importlib.resources`.
``tests/packaging`` fails when a packaged copy and its repository file differ.

:func:`shipped_file` prefers the repository file when running from a source checkout (an edit
there takes effect at once, as before) and otherwise returns the packaged copy.

>>> p = shipped_file("breakers", "data/default-policy.yaml", "deploy/policy/default.yaml")
>>> p.name in {"default.yaml", "default-policy.yaml"} and p.is_file()
True
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

#: the root of a source checkout, when this module runs from one (``pyproject.toml`` next to ``breakers/``)
_ROOT = Path(__file__).resolve().parent.parent

#: the default policy: package, resource inside it, path in the repository
DEFAULT_POLICY_RESOURCE = ("breakers", "data/default-policy.yaml", "deploy/policy/default.yaml")


def packaged_file(package: str, resource: str) -> Path:
    """Path of ``resource`` inside the installed ``package`` (pip installs wheels unzipped).

    >>> packaged_file("breakers", "data/default-policy.yaml").parent.name
    'data'
    """
    return Path(str(files(package).joinpath(resource)))


def checkout_file(repo_path: str) -> Path | None:
    """``repo_path`` of the source checkout this code runs from, None when installed from a wheel."""
    path = _ROOT / repo_path
    return path if (_ROOT / "pyproject.toml").is_file() and path.is_file() else None


def shipped_file(package: str, resource: str, repo_path: str) -> Path:
    """The checkout's ``repo_path`` in a source checkout, else the packaged ``resource`` of ``package``."""
    return checkout_file(repo_path) or packaged_file(package, resource)
