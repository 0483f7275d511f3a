"""Readiness for a service manager: systemd's sd_notify protocol, without libsystemd.

Under a unit with `Type=notify` systemd passes a datagram socket in NOTIFY_SOCKET; a
node says READY=1 once its ports serve and STOPPING=1 as it begins to leave. Elsewhere
(no NOTIFY_SOCKET) this does nothing.
"""

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify(state: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Tell the service manager `state` (READY=1, STOPPING=1, STATUS=...); True if told."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notifier:
            notifier.connect(address)
            notifier.sendall(state.encode())
    except OSError as error:
        log.warning(
            "could not tell the service manager %s: %s", state.split("=", maxsplit=1)[0], error
        )
        return False
    return True
