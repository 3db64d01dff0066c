"""Detached services started by infra/proc.py: no ``ResourceWarning`` for the running child
(neither while we run nor at exit), and no zombie once it exits."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

from infra.proc import is_alive, spawn, terminate_group

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def test_spawn_returns_the_pid_and_leaves_no_resource_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pid = spawn(SLEEPER, env=_env(), cwd=tmp_path, log_path=tmp_path / "out.log")
        gc.collect()
    try:
        assert isinstance(pid, int)  # a pid to track, not a Popen to be forgotten
        assert is_alive(pid)
        assert os.getpgid(pid) == pid  # its own session and process group
        leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert leaks == []
    finally:
        terminate_group(pid, 5)


def test_an_exited_child_is_reaped_without_anyone_polling(tmp_path: Path) -> None:
    pid = spawn([sys.executable, "-c", "pass"], env=_env(), cwd=tmp_path,
                log_path=tmp_path / "out.log")
    gc.collect()
    deadline = time.monotonic() + 10
    # (not is_alive(): it reaps by itself; a zombie keeps /proc/<pid> until it is reaped)
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "the exited child lingers as a zombie"
    assert "start: " in (tmp_path / "out.log").read_text()


def test_exiting_while_the_service_runs_warns_nothing(tmp_path: Path) -> None:
    """``aichat stack up`` returns while its services run on: no warning at interpreter exit."""
    script = (
        "import sys\nfrom pathlib import Path\nfrom infra.proc import spawn\n"
        f"pid = spawn({SLEEPER!r}, env={_env()!r}, cwd=Path({str(tmp_path)!r}),"
        f" log_path=Path({str(tmp_path / 'out.log')!r}))\n"
        "print(pid)\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", script],
        capture_output=True, text=True, timeout=60, check=False,
    )
    pid = int(done.stdout.strip() or 0)
    try:
        assert done.returncode == 0, done.stderr
        assert pid and is_alive(pid)  # detached: it outlives the process that started it
        assert "Warning" not in done.stderr, done.stderr
    finally:
        if pid:
            terminate_group(pid, 5)
