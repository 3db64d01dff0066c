"""Who is asking: the seam where JWT authentication goes later.

For now :func:`authenticate` trusts ``?user=`` (or ``anonymous``) and puts
everyone in tenant ``default``. The later version verifies a JWT from the
``Authorization`` header or the ``token`` query parameter and raises
:class:`~query_gateway.errors.GatewayError` children to refuse the upgrade.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.requests import HTTPConnection

ANONYMOUS = "anonymous"
DEFAULT_TENANT = "default"
_USER = re.compile(r"^[\w.@+-]{1,128}$")


@dataclass(frozen=True, slots=True)
class Principal:
    user: str
    tenant: str


def authenticate(conn: HTTPConnection) -> Principal:
    """The principal of a websocket handshake (or any HTTP request)."""
    user = conn.query_params.get("user", "")
    if not _USER.match(user):
        user = ANONYMOUS
    return Principal(user=user, tenant=DEFAULT_TENANT)
