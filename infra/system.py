"""Host facts and provisioning plumbing: the JDK, the unprivileged service user, locks.

Elasticsearch refuses to run as root. When the stack is started as root we create
a system user (``useradd --system``), hand it the Elasticsearch directories and
start the JVM with that uid (``subprocess`` drops privileges itself: ``runuser``'s
watching parent would SIGKILL the JVM two seconds after a SIGTERM).
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import logging
import os
import pwd
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from infra.errors import ProvisionError
from infra.proc import RunAs

log = logging.getLogger(__name__)

JVM_ROOT = Path("/usr/lib/jvm")
MIN_JAVA = 17
_VERSION = re.compile(r'^JAVA_VERSION="(\d+)(?:\.(\d+))?', re.MULTILINE)


def java_major(home: Path) -> int | None:
    """Major version of the JDK at ``home`` from its ``release`` file (1.8 -> 8)."""
    try:
        match = _VERSION.search((home / "release").read_text(encoding="utf-8"))
    except OSError:
        return None
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java_home(preferred: Path | None) -> Path:
    """``preferred`` (JAVA_HOME) if it is a JDK >= 17, else the oldest such JDK in /usr/lib/jvm."""
    if preferred is not None:
        if (java_major(preferred) or 0) >= MIN_JAVA and (preferred / "bin" / "java").exists():
            return preferred
        log.warning("JAVA_HOME %s is not a JDK >= %d; looking in %s", preferred, MIN_JAVA, JVM_ROOT)
    candidates = []
    if JVM_ROOT.is_dir():
        for home in sorted(JVM_ROOT.iterdir()):
            major = java_major(home)
            if major and major >= MIN_JAVA and (home / "bin" / "java").exists():
                candidates.append((major, home.resolve()))
    if not candidates:
        java = shutil.which("java")
        if java:
            home = Path(java).resolve().parent.parent
            if (java_major(home) or 0) >= MIN_JAVA:
                return home
        raise ProvisionError(f"no JDK >= {MIN_JAVA} found: set JAVA_HOME or install openjdk-17")
    return min(candidates)[1]


def service_user(name: str) -> RunAs | None:
    """The user to run Elasticsearch as: None when not root; created (system user) if missing."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        log.info("creating system user %s (Elasticsearch refuses to run as root)", name)
        run_step(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            what=f"create user {name}",
        )
        entry = pwd.getpwnam(name)
    return RunAs(name, entry.pw_uid, entry.pw_gid)


def _can_traverse(st: os.stat_result, who: RunAs) -> bool:
    groups = {who.gid} | {g.gr_gid for g in grp.getgrall() if who.user in g.gr_mem}
    if st.st_uid == who.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def grant_traverse(path: Path, who: RunAs) -> None:
    """Make every ancestor of ``path`` traversable (x, not r) for ``who``; logs each change."""
    for parent in reversed(path.resolve().parents):
        st = parent.stat()
        if not _can_traverse(st, who):
            log.warning(
                "granting traverse (o+x, not list) on %s so %s can reach %s", parent, who.user, path
            )
            parent.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def chown_tree(path: Path, who: RunAs) -> None:
    os.chown(path, who.uid, who.gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), who.uid, who.gid, follow_symlinks=False)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so two ``stack up`` never provision the same thing at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="ascii") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_step(
    argv: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log_path: Path | None = None,
) -> None:
    """Run a provisioning command to completion; raise :class:`ProvisionError` with its output."""
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        raise ProvisionError(f"{what}: {argv[0]!r} is not installed")
    result = subprocess.run(  # noqa: S603 - fixed argv
        list(argv),
        env=None if env is None else dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as out:
            out.write(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise ProvisionError(
            f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n" + "\n".join(output)
        )
