"""``python -m infra.elk.kibana``: rewrite ``aichat.ndjson`` from the definitions in ``__init__``."""

from __future__ import annotations

import sys

from infra.elk.kibana import write_ndjson

if __name__ == "__main__":
    sys.stdout.write(f"wrote {write_ndjson()}\n")
