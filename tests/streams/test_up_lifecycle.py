"""`tripwire up` starts broker + worker + traffic, and leaves nothing behind when stopped or killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from streams.ops.procutil import free_port, port_open
from helpers.support import REPO, wait_for

pytestmark = pytest.mark.e2e


def _procs_mentioning(*needles: str) -> list[tuple[int, str]]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in cmd for n in needles):
            out.append((int(entry.name), cmd))
    return out


def _start_up(tmp_path: Path) -> tuple[subprocess.Popen, int, int, Path]:
    broker_port, web_port = free_port(), free_port()
    data = tmp_path / "data"
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "up", "--broker-port", str(broker_port), "--web-port", str(web_port),
         "--data-dir", str(data), "--rate", "200"],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO), start_new_session=True)
    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "up.log").read_text())
        return "tripwire is up" in (tmp_path / "up.log").read_text()
    wait_for(up, 120, "tripwire up to print its URLs")
    return proc, broker_port, web_port, data


def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    proc, broker_port, web_port, data = _start_up(tmp_path)
    web = f"http://127.0.0.1:{web_port}"
    wait_for(lambda: "tripwire_events_total" in httpx.get(f"{web}/metrics").text and
             sum(float(l.rsplit(" ", 1)[1]) for l in httpx.get(f"{web}/metrics").text.splitlines()
                 if l.startswith("tripwire_events_total{")) > 0, 60, "events counted")
    assert (data / "admin.token").stat().st_mode & 0o077 == 0  # operator token readable by its owner only
    children = _procs_mentioning(f"127.0.0.1:{broker_port}", str(data))
    assert len(children) >= 2, children  # the broker and the worker (and `up` itself)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    log = (tmp_path / "up.log").read_text()
    assert "stopped." in log
    assert (data / "admin.token").read_text().strip() not in log  # the token is never printed
    wait_for(lambda: not _procs_mentioning(f"127.0.0.1:{broker_port}", str(data)), 20, "no process left")
    assert not port_open("127.0.0.1", broker_port) and not port_open("127.0.0.1", web_port)


def test_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    proc, broker_port, web_port, data = _start_up(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    wait_for(lambda: not _procs_mentioning(f"127.0.0.1:{broker_port}", str(data)), 30,
             "broker and worker to exit after their parent was SIGKILLed")
    assert not port_open("127.0.0.1", broker_port) and not port_open("127.0.0.1", web_port)
