"""How the gateway tells of a refusal without letting a client flood the log.

    excerpt(value, limit=64) -> str            a client's text as a log line may show it
    RefusalLog(interval_s).log(client, reason, msg, *args) -> bool

A client controls what it sends, so what the gateway repeats of it (in a log line,
an ``error`` frame's message) is an :func:`excerpt`: its first ``limit`` characters,
control and invisible characters escaped (no forged log lines, no terminal escapes),
and how much was cut.

:class:`RefusalLog` writes at most one line per (client, reason) per ``interval_s``;
the next line of that pair says how many were suppressed meanwhile. Across all
clients it writes at most ``max_lines`` lines per interval, so a flood from many
addresses is bounded too. Suppressed lines are counted in
``aichat_gateway_refusal_logs_suppressed_total``; every refusal itself is still
counted in its own metric. The lines go to the ``query_gateway.refusals`` logger.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from query_gateway.metrics import REFUSAL_LOGS_SUPPRESSED

logger = logging.getLogger(__name__)

#: characters of a client's text repeated in a log line or an error message
EXCERPT_CHARS = 64
#: the longest message (server text with client excerpts in it) a refusal logs
MESSAGE_CHARS = 240
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _escape(char: str) -> str:
    if unicodedata.category(char) not in _ESCAPED_CATEGORIES:
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def excerpt(value: object, limit: int = EXCERPT_CHARS, *, quote: bool = True) -> str:
    """``value`` cut to ``limit`` characters, control and invisible characters escaped.

    A string is quoted, with its quotes and backslashes escaped (``quote=False``
    leaves it bare: for server text that already holds excerpts); anything else is
    shown by its ``repr``. What was cut is said as ``…(+N chars)``."""
    if not isinstance(value, str):
        value, quote = repr(value), False
    head = value[:limit]
    if quote:
        head = head.replace("\\", "\\\\").replace("'", "\\'")
    head = "".join(_escape(c) for c in head)
    if quote:
        head = f"'{head}'"
    cut = len(value) - limit
    return f"{head}…(+{cut} chars)" if cut > 0 else head


@dataclass(slots=True)
class _Window:
    logged_at: float
    suppressed: int = 0


class RefusalLog:
    """Rate-limited log lines of refusals, keyed by (client, reason)."""

    def __init__(
        self,
        interval_s: float,
        *,
        log: logging.Logger = logger,
        level: int = logging.INFO,
        max_lines: int = 100,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = log
        self._interval_s = interval_s
        self._level = level
        self._max_lines = max_lines
        self._max_keys = max_keys
        self._clock = clock
        self._windows: OrderedDict[tuple[str, str], _Window] = OrderedDict()
        self._budget_started = -float("inf")
        self._budget_used = 0

    def log(
        self,
        client: str,
        reason: str,
        msg: str,
        *args: object,
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        """Log ``msg % args`` unless :meth:`admit` says no; True when the line was written."""
        suppressed = self.admit(client, reason)
        if suppressed is None:
            return False
        if suppressed:
            msg += " (%d more like it suppressed since the last line)"
            args = (*args, suppressed)
        self._logger.log(self._level, msg, *args, extra=dict(extra or {}))
        return True

    def admit(self, client: str, reason: str) -> int | None:
        """Whether to write a line for this (client, reason) now: None when it had one less
        than an interval ago or the interval's lines are spent (the line left out is
        counted); else how many were left out since its last line."""
        now = self._clock()
        key = (client, reason)
        window = self._windows.get(key)
        if window is not None and now - window.logged_at < self._interval_s:
            self._suppress(window)
            return None
        if now - self._budget_started >= self._interval_s:
            self._budget_started, self._budget_used = now, 0
        if self._budget_used >= self._max_lines:
            if window is None:
                window = self._remember(key, _Window(logged_at=-float("inf")))
            self._suppress(window)
            return None
        self._budget_used += 1
        self._remember(key, _Window(logged_at=now))
        return window.suppressed if window is not None else 0

    def _suppress(self, window: _Window) -> None:
        window.suppressed += 1
        REFUSAL_LOGS_SUPPRESSED.inc()

    def _remember(self, key: tuple[str, str], window: _Window) -> _Window:
        self._windows[key] = window
        self._windows.move_to_end(key)
        while len(self._windows) > self._max_keys:
            self._windows.popitem(last=False)
        return window
