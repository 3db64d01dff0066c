"""``python -m infra.grafana``: rewrite ``aichat-dashboard.json`` from ``__init__``."""

from __future__ import annotations

import sys

from infra.grafana import write_dashboard

if __name__ == "__main__":
    sys.stdout.write(f"wrote {write_dashboard()}\n")
