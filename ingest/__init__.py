"""Producer SDK and CLI: publish documents onto the ``documents`` topic."""

from __future__ import annotations

from pathlib import Path

#: the bundled sample corpus (Markdown; ``aichat up`` ingests it into an empty index)
SAMPLE_DIR = Path(__file__).with_name("sample")
