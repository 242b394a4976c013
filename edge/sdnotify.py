"""systemd's notify protocol: ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=...``.

sd_notify is one datagram to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` (a path, or an
abstract socket when it starts with ``@``), so it is written here by hand rather than pulling in
``systemd-python`` (which needs ``libsystemd-dev`` to build). Without ``$NOTIFY_SOCKET`` (not run
by systemd) every call is a no-op. The watchdog interval comes from ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``, when set, must be this process).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

from edge.types import is_ascii_number

logger = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to systemd (or to nothing, outside systemd).

    Args:
        environ: The environment to read ``NOTIFY_SOCKET``/``WATCHDOG_*`` from (``os.environ``
            when None).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if addr.startswith("@"):
            self.address = "\0" + addr[1:]
        elif addr.startswith("/"):
            self.address = addr
        elif addr:
            logger.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract socket; ignored",
                           addr)
        self.watchdog_s: float | None = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if (is_ascii_number(usec) and int(usec) > 0
                and (not pid or pid == str(os.getpid()))):
            self.watchdog_s = int(usec) / 1e6
        self._last_ping = -float("inf")
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """Whether a notify socket is configured."""
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Sends ``fields`` (``"READY=1"``, ``"STATUS=..."``) as one datagram.

        Returns:
            True when sent; False without a socket or when sending failed (logged).
        """
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode("utf-8"), self.address)
        except OSError as e:
            logger.warning("sd_notify %s to %r failed: %s", fields, self.address, e)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """Tells systemd the service is up (``Type=notify``)."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self, status: str = "") -> bool:
        """Tells systemd the service is shutting down."""
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """Updates the status line ``systemctl status`` shows."""
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        """Pings the watchdog, at most four times per watchdog interval (cheap to call per frame).

        Returns:
            True when a ping was sent now.
        """
        if self.watchdog_s is None or self.address is None:
            return False
        now = time.monotonic()
        if now - self._last_ping < self.watchdog_s / 4:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        """Closes the socket; safe to call twice."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
