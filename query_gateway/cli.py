"""``aichat gateway`` (run a replica), ``aichat ask`` (one question over the websocket)
and ``aichat token`` (mint a development token).

``aichat ask`` sends ``--token`` (or ``AICHAT_TOKEN``); without one it mints a
five-minute HS256 token from ``AICHAT_JWT_SECRET_FILE`` or, failing that, from the
local secret ``aichat up`` created (``AICHAT_GATEWAY_LOCAL_SECRET_FILE``, by default
under the stack directory).

``aichat`` (``streams/cli.py``) calls :func:`register` on its subparsers, configures
logging, and calls ``args.func(args)`` (that is :func:`run`); ``python -m
query_gateway.cli`` does the same on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import re
import ssl
import sys
from collections.abc import Sequence
from typing import Any

from query_gateway.client import ask
from query_gateway.config import GatewaySettings
from query_gateway.dev_jwt import mint
from query_gateway.errors import GatewayError
from streams.config import load_settings
from streams.errors import ConfigError

DEFAULT_URL = "ws://127.0.0.1:8000/ws"
ASK_TOKEN_TTL_S = 300.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gateway = subparsers.add_parser("gateway", help="run the websocket gateway (one replica)")
    gateway.add_argument("--host", help="bind address (AICHAT_GATEWAY_HOST, default 127.0.0.1)")
    gateway.add_argument("--port", type=int, help="port (AICHAT_GATEWAY_PORT, default 8000)")
    gateway.add_argument(
        "--reply-partition",
        type=int,
        help="answers partition this replica owns, distinct per replica (AICHAT_GATEWAY_REPLY_PARTITION)",
    )
    gateway.set_defaults(gateway_command="gateway", func=run)

    ask_ = subparsers.add_parser("ask", help="ask one question over the gateway's websocket")
    ask_.add_argument("question")
    ask_.add_argument(
        "--url", default=DEFAULT_URL, help=f"gateway websocket (default {DEFAULT_URL})"
    )
    ask_.add_argument("--top-k", type=int, default=5, help="sources to retrieve (1..20, default 5)")
    ask_.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="metadata equality filter",
    )
    ask_.add_argument(
        "--token",
        default=os.environ.get("AICHAT_TOKEN"),
        help="JWT to send (default AICHAT_TOKEN; else one minted from the local secret)",
    )
    ask_.add_argument("--user", default=None, help="user of a minted token (default: $USER)")
    ask_.add_argument("--tenant", default="default", help="tenant of a minted token")
    ask_.add_argument("--cafile", default=None, help="CA bundle that signed a wss:// gateway")
    ask_.add_argument("--conversation", default=None, metavar="ID",
                      help="continue this conversation (its id is printed after every answer)")
    ask_.set_defaults(gateway_command="ask", func=run)

    token = subparsers.add_parser(
        "token", help="mint an HS256 token from the gateway's secret (local development)"
    )
    token.add_argument("--user", default=None, help="the 'sub' claim (default: $USER)")
    token.add_argument("--tenant", default="default", help="the 'tenant' claim")
    token.add_argument("--ttl", type=float, default=12 * 3600.0, help="seconds (default 12 h)")
    token.set_defaults(gateway_command="token", func=run)


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "gateway_command", None)
    if command == "gateway":
        return _run_gateway(args)
    if command == "ask":
        return asyncio.run(_run_ask(args))
    if command == "token":
        return _run_token(args)
    raise ValueError(f"not a gateway command: {command!r}")


def _run_gateway(args: argparse.Namespace) -> int:
    from query_gateway.server import serve  # uvicorn only where it is needed

    overrides = {
        key: value
        for key, value in (
            ("gateway_host", args.host),
            ("gateway_port", args.port),
            ("gateway_reply_partition", args.reply_partition),
        )
        if value is not None
    }
    try:
        settings = load_settings(GatewaySettings, **overrides)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        serve(settings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    return 0


def _default_user() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = ""
    return re.sub(r"[^\w.@+-]", "_", name)[:64] or "local"


def mint_local_token(user: str, tenant: str, ttl_s: float) -> str | None:
    """A token signed with the configured HS256 secret, else with ``aichat up``'s local one."""
    settings = load_settings(GatewaySettings)
    if settings.jwt_algorithm != "HS256":
        return None
    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value()
    else:
        path = settings.local_secret_file
        if not path.exists():
            return None
        secret = path.read_text(encoding="utf-8").strip()
    return mint(
        secret,
        user=user,
        tenant=tenant,
        ttl_s=ttl_s,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )


def _run_token(args: argparse.Namespace) -> int:
    try:
        token = mint_local_token(args.user or _default_user(), args.tenant, args.ttl)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if token is None:
        print(
            "no HS256 secret: set AICHAT_JWT_SECRET_FILE, or run `aichat up` once "
            "(it creates a local one)",
            file=sys.stderr,
        )
        return 1
    print(token)
    return 0


async def _run_ask(args: argparse.Namespace) -> int:
    filters: dict[str, Any] = {}
    for item in args.filter:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"--filter {item!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        filters[key] = value
    token = args.token
    if not token:
        try:
            token = mint_local_token(args.user or _default_user(), args.tenant, ASK_TOKEN_TTL_S)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
    context = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
    sources: list[dict[str, Any]] = []
    conversation = args.conversation
    try:
        async for frame in ask(
            args.url, args.question, top_k=args.top_k, filters=filters, token=token, ssl=context,
            conversation_id=conversation,
        ):
            kind = frame.get("type")
            if kind == "ack":
                conversation = frame.get("conversation_id") or conversation
            elif kind == "sources":
                sources = frame.get("sources", [])
            elif kind == "token":
                print(printable(str(frame.get("delta", ""))), end="", flush=True)
            elif kind == "done":
                print()
                _print_sources(sources)
                timings = ", ".join(f"{k} {v:g} ms" for k, v in frame.get("timings_ms", {}).items())
                print(f"\ntimings: {timings or '(none)'}")
                if conversation:
                    print(printable(f"conversation: {conversation} (continue it with "
                                    f"--conversation {conversation})"))
                return 0
            elif kind == "error":
                print(
                    printable(f"\nerror {frame.get('code')}: {frame.get('message')} "
                              f"(error_id {frame.get('error_id')})"),
                    file=sys.stderr,
                )
                return 1
    except GatewayError as exc:
        print(f"error {exc.code}: {exc}", file=sys.stderr)
        return 1
    print("error: the answer ended without done", file=sys.stderr)
    return 1


#: terminal control: escape sequences (CSI, OSC, other ESC), then any other control character
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Answer text as the terminal should show it: a document cannot move the cursor,
    retitle the window or hide text with escape sequences (newlines and tabs stay)."""
    return _CONTROL.sub("", text)


def _print_sources(sources: list[dict[str, Any]]) -> None:
    if not sources:
        print("\nsources: none")
        return
    print("\nsources:")
    for n, src in enumerate(sources, 1):
        title = src.get("title") or "(untitled)"
        print(printable(f"  [{n}] {src.get('doc_id')}  {title}  score {float(src.get('score', 0.0)):.3f}"))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m query_gateway.cli``: the same commands, logging configured here."""
    from streams.config import ObservabilitySettings, log_json
    from streams.ecs_logging import configure_logging

    parser = argparse.ArgumentParser(prog="python -m query_gateway.cli")
    register(parser.add_subparsers(required=True, metavar="{gateway,ask,token}"))
    args = parser.parse_args(argv)
    try:
        obs = load_settings(ObservabilitySettings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(
        obs.log_level,
        service_name=f"aichat-{args.gateway_command}",
        environment=obs.environment,
        json=log_json(obs),
    )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
