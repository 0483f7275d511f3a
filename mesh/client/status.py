"""One question to the mesh, answered by the first node that can be reached."""

import ssl
from collections.abc import Callable

from mesh.client.connection import NodeConnection
from mesh.client.reach import UnreachableError, reason_in_words
from mesh.wire.protocol import ClientMessage, NodeMessage, StatusReply, StatusRequest


async def fetch_status(
    servers: list[tuple[str, int]],
    token: str,
    timeout_s: float,
    ssl_context: ssl.SSLContext | None = None,
) -> StatusReply:
    """The status of the first node in `servers` that answers."""
    reply = await ask_first(
        servers, token, timeout_s, lambda i: StatusRequest(request_id=i), ssl_context
    )
    assert isinstance(reply, StatusReply)
    return reply


async def ask_first(
    servers: list[tuple[str, int]],
    token: str,
    timeout_s: float,
    build: Callable[[int], ClientMessage],
    ssl_context: ssl.SSLContext | None = None,
) -> NodeMessage:
    """One request, answered by the first node in `servers` that can be reached."""
    reasons: dict[str, str] = {}
    for host, port in servers:
        try:
            connection = await NodeConnection.open(
                host,
                port,
                token=token,
                client_name="meshchat-cli",
                timeout_s=timeout_s,
                ssl_context=ssl_context,
            )
        except (OSError, TimeoutError) as error:
            reasons[f"{host}:{port}"] = reason_in_words(error, timeout_s)
            continue
        try:
            return await connection.request(build, timeout_s)
        finally:
            await connection.close()
    raise UnreachableError(reasons)
