"""Errors of the local stack.

StackError                  root
├── ProvisionError          a download, build or unpack step failed (names the step)
├── ServiceFailedToStart    a service died or did not become ready (service, log_path)
└── PortInUse               a port the stack needs is held by something that is not ours
"""

from __future__ import annotations

from pathlib import Path


class StackError(Exception):
    """Root of every error raised by ``infra``."""


class ProvisionError(StackError):
    """Installing or building a service's binaries failed."""


class ServiceFailedToStart(StackError):
    """A service exited early or did not answer its health check in time."""

    def __init__(
        self, service: str, reason: str, log_path: Path, log_tail: list[str] | None = None
    ) -> None:
        self.service = service
        self.reason = reason
        self.log_path = log_path
        self.log_tail = log_tail or []
        super().__init__(f"{service} failed to start: {reason} (log: {log_path})")


class PortInUse(StackError):
    """A port is bound by a process the stack does not manage."""

    def __init__(self, service: str, port: int) -> None:
        self.service = service
        self.port = port
        super().__init__(
            f"{service}: port 127.0.0.1:{port} is in use by another process "
            "(stop it or choose other ports in the AICHAT_* settings)"
        )
