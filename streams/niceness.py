"""Lower this process's CPU priority: the ingest worker yields the CPU to answering.

On Linux a nice value belongs to each thread, and a new thread starts with its
creator's. :func:`lower_cpu_priority` therefore renices every thread that exists
(the log shipper's, for one) and is called before the model's thread pools are
created, so every later thread (inference, tokenizers) inherits the lower priority.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_NICE = 19
_TASKS = Path("/proc/self/task")


def lower_cpu_priority(increment: int) -> int:
    """Add ``increment`` (≥ 0) to the nice value of every thread; returns the new value.

    Raising the nice value needs no privilege, lowering it back would, so this is one-way.
    """
    if increment < 0:
        raise ValueError("only a lower priority (a positive increment) needs no privilege")
    tids = [int(t.name) for t in _TASKS.iterdir()] if _TASKS.is_dir() else [0]
    for tid in tids:
        try:
            current = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICE, current + increment))
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
    return os.getpriority(os.PRIO_PROCESS, 0)
