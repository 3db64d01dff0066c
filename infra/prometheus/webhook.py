"""The alert webhook: where the local Alertmanager delivers, and where an operator or a test reads.

``python -m infra.prometheus.webhook --port 9191 --out notifications.jsonl`` (the stack's
``alert-webhook`` service runs exactly that) serves, on 127.0.0.1 only:

``POST /alerts``     Alertmanager's webhook payload (version 4); appended whole, with the
                     time it arrived (``received_at``, Unix seconds), as one line of the file
``GET /alerts``      every notification kept so far, oldest first (``?since=UNIX_SECONDS``)
``GET /-/healthy``   200

The file outlives the process (``tail -f`` it, or ``jq`` it after an incident). Each
notification holds one or more alerts, each with its ``status`` (``firing`` / ``resolved``),
``labels`` (``alertname``, ``instance``, ``group``…), ``annotations`` and ``startsAt`` /
``endsAt``: :func:`alert_events` flattens them for a reader.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

MAX_BODY = 4 * 1024 * 1024


@dataclass(frozen=True)
class AlertEvent:
    """One alert of one delivered notification."""

    received_at: float
    status: str  # firing | resolved
    name: str
    labels: dict[str, str]
    starts_at: str
    ends_at: str

    def matches(self, name: str, status: str | None = None, **labels: str) -> bool:
        return (self.name == name and (status is None or self.status == status)
                and all(self.labels.get(k) == v for k, v in labels.items()))


def alert_events(notifications: list[dict[str, Any]]) -> list[AlertEvent]:
    """Every alert of every notification, in the order they arrived."""
    events = []
    for note in notifications:
        for alert in note.get("payload", {}).get("alerts", []):
            labels = {str(k): str(v) for k, v in alert.get("labels", {}).items()}
            events.append(AlertEvent(float(note["received_at"]), str(alert.get("status")),
                                     labels.get("alertname", ""), labels,
                                     str(alert.get("startsAt", "")), str(alert.get("endsAt", ""))))
    return events


def fetch(url: str, since: float | None = None, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The notifications the webhook at ``url`` (``http://127.0.0.1:9191``) holds."""
    params = {} if since is None else {"since": str(since)}
    response = httpx.get(f"{url.rstrip('/')}/alerts", params=params, timeout=timeout_s)
    response.raise_for_status()
    data: list[dict[str, Any]] = response.json()
    return data


def answers_200(url: str, timeout_s: float = 2.0) -> tuple[bool, str]:
    """(healthy, detail) of a health endpoint: Prometheus' and Alertmanager's too."""
    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return False, f"not reachable ({type(exc).__name__})"
    if response.status_code != 200:
        return False, f"HTTP {response.status_code}: {response.text.strip()[:80]}"
    return True, "ok"


def healthy(url: str, timeout_s: float = 2.0) -> tuple[bool, str]:
    return answers_200(f"{url.rstrip('/')}/-/healthy", timeout_s)


class _Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)

    def append(self, payload: Any) -> int:
        line = json.dumps({"received_at": time.time(), "payload": payload}, sort_keys=True)
        with self.lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(line + "\n")
        return len(payload.get("alerts", [])) if isinstance(payload, dict) else 0

    def read(self, since: float | None) -> list[Any]:
        with self.lock:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        notes = [json.loads(line) for line in lines if line.strip()]
        return [n for n in notes if since is None or n["received_at"] >= since]


def _handler(store: _Store) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "aichat-alert-webhook"

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlsplit(self.path)
            if url.path == "/-/healthy":
                self._send(200, {"status": "ok"})
            elif url.path == "/alerts":
                since = parse_qs(url.query).get("since")
                try:
                    self._send(200, store.read(float(since[0]) if since else None))
                except ValueError:
                    self._send(400, {"error": "since: Unix seconds"})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            if urlsplit(self.path).path != "/alerts":
                self._send(404, {"error": "not found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                self._send(413 if length else 400, {"error": "body size"})
                return
            try:
                payload = json.loads(self.rfile.read(length))
            except ValueError:
                self._send(400, {"error": "not JSON"})
                return
            self._send(200, {"stored": store.append(payload)})

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return  # one line per delivery is in the file already

    return Handler


def serve(port: int, out: Path, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """The receiver, bound (not yet serving: call ``serve_forever``)."""
    return ThreadingHTTPServer((host, port), _handler(_Store(out)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.prometheus.webhook")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="JSON Lines file of notifications")
    args = parser.parse_args(argv)
    server = serve(args.port, args.out)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
