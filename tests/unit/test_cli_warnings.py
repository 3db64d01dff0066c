"""The ``aichat`` entry point prints no third-party warnings a newcomer cannot act on:
authlib's httpx deprecation (imported by weaviate-client) is filtered, exactly that one."""

from __future__ import annotations

import subprocess
import sys

HTTPX_DEPRECATED = "The httpx module is deprecated"


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter (authlib warns once, on first import) with every warning shown."""
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "default", "-c", code],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_weaviate_client_import_still_warns_without_the_filter() -> None:
    """The warning the filter is for exists: when this fails, the filter can go."""
    done = _python("import weaviate")
    assert done.returncode == 0, done.stderr
    assert HTTPX_DEPRECATED in done.stderr


def test_entry_point_filter_silences_it_though_authlib_is_imported_later() -> None:
    done = _python(
        "from streams.cli import quiet_authlib_httpx_warning\n"
        "quiet_authlib_httpx_warning()\n"
        "import infra.up  # what `aichat up` imports: weaviate-client, then authlib\n"
    )
    assert done.returncode == 0, done.stderr
    assert HTTPX_DEPRECATED not in done.stderr
    assert "Warning" not in done.stderr, done.stderr


def test_other_authlib_deprecations_still_show() -> None:
    done = _python(
        "from streams.cli import quiet_authlib_httpx_warning\n"
        "quiet_authlib_httpx_warning()\n"
        "import weaviate\n"
        "from authlib.deprecate import deprecate\n"
        "deprecate('another deprecation', stacklevel=1)\n"
    )
    assert done.returncode == 0, done.stderr
    assert HTTPX_DEPRECATED not in done.stderr
    assert "another deprecation" in done.stderr
