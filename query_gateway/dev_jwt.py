"""HS256 tokens for local development, tests and benchmarks (production tokens come
from your identity provider).

    ensure_secret(path) -> str          a random secret in a 0600 file, created once
    mint(secret, user=…, tenant=…, ttl_s=…, audience=…, issuer=…) -> str

``aichat up`` keeps its secret in :func:`local_secret_path` (under the stack
directory) and hands it to the gateway as ``AICHAT_JWT_SECRET_FILE``; ``aichat
ask`` and ``aichat token`` read the same file to mint short-lived tokens.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

import jwt

LOCAL_SECRET_NAME = "jwt-hs256.secret"


def local_secret_path(stack_dir: Path) -> Path:
    return stack_dir / "gateway" / LOCAL_SECRET_NAME


def ensure_secret(path: Path) -> str:
    """The secret stored at ``path``; a new random one (0600) if there is none.

    Written whole to a fresh file (``O_EXCL``: never through a file or link someone else
    placed there), then linked into place, which fails if another process was first — its
    secret is used then. So the secret is never readable by others, even for a moment.
    """
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secret + "\n")
        os.link(tmp, path)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    finally:
        tmp.unlink(missing_ok=True)
    return secret


def mint(
    secret: str,
    *,
    user: str,
    tenant: str = "default",
    ttl_s: float = 3600.0,
    audience: str = "aichat",
    issuer: str = "aichat",
    algorithm: str = "HS256",
    extra: dict[str, Any] | None = None,
) -> str:
    now = time.time()
    claims: dict[str, Any] = {
        "sub": user,
        "tenant": tenant,
        "aud": audience,
        "iss": issuer,
        "iat": int(now),
        "exp": int(now + ttl_s),
        **(extra or {}),
    }
    return jwt.encode(claims, secret, algorithm=algorithm)
