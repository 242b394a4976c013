"""``set/<name>`` commands: what can be changed at run time, and the validation of a payload.

A command payload is a JSON value (``true``, ``3``, ``2.5``) or, for switches, ``ON``/``OFF``
(what Home Assistant sends). Anything else - an unknown name, a payload over the size limit, not
UTF-8, not JSON, the wrong type, out of range - raises :class:`CommandError` and changes
nothing; a retained message is refused before it gets here (:mod:`edge.comms.mqtt`).

Ranges (the same as the config's): ``max_persons`` in [1, 32]; ``detector_hz`` in
[0.1, min(60, scheduler.rate_hz)] Hz - below 0.1 Hz the detector practically never runs while
the device still looks healthy.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from typing import Any

from edge.config import DETECTOR_HZ_MAX, DETECTOR_HZ_MIN

COMMANDS = ("enabled", "max_persons", "detector_hz")
MAX_PERSONS_LIMIT = 32


class CommandError(ValueError):
    """A command was rejected (the message says why)."""


@dataclass
class Controls:
    """The settings commands change, shared between the MQTT thread and the frame loop.

    Attributes:
        enabled: Whether people are detected and poses published (False: the detector idles,
            tracks are dropped, no pose frames).
        max_persons: Most people tracked at once.
        detector_hz: Detector runs per second (at most ``detector_hz_max``).
        detector_hz_max: Upper bound of ``detector_hz`` (the core's tick rate; at most
            :data:`~edge.config.DETECTOR_HZ_MAX`).
    """

    enabled: bool
    max_persons: int
    detector_hz: float
    detector_hz_max: float

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def get(self, name: str) -> Any:
        """The current value of setting ``name``."""
        with self._lock:
            return getattr(self, name)

    def snapshot(self) -> dict[str, Any]:
        """Every settable value."""
        with self._lock:
            return {name: getattr(self, name) for name in COMMANDS}

    def apply(self, name: str, payload: bytes, *, max_bytes: int = 256) -> Any:
        """Validates a command and applies it.

        Args:
            name: The topic's last level (``set/<name>``).
            payload: The message payload.
            max_bytes: Longer payloads are refused unread.

        Returns:
            The new value.

        Raises:
            CommandError: The command is invalid; nothing was changed.
        """
        value = parse_command(name, payload, max_bytes=max_bytes,
                              detector_hz_max=self.detector_hz_max)
        with self._lock:
            setattr(self, name, value)
        return value


def _json(payload: bytes, max_bytes: int) -> Any:
    if len(payload) > max_bytes:
        raise CommandError(f"payload of {len(payload)} bytes is over the limit of {max_bytes}")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CommandError("payload is not UTF-8") from None
    if text.upper() in ("ON", "OFF"):
        return text.upper() == "ON"
    try:
        return json.loads(text, parse_constant=lambda c: math.nan)
    except ValueError:
        raise CommandError(f"payload {text[:40]!r} is not a JSON value") from None


def parse_command(name: str, payload: bytes, *, max_bytes: int = 256,
                  detector_hz_max: float = 30.0) -> Any:
    """Validates one command.

    Args:
        name: The setting (one of :data:`COMMANDS`).
        payload: Raw payload.
        max_bytes: Size limit of the payload.
        detector_hz_max: Largest accepted ``detector_hz`` (capped at 60 Hz).

    Returns:
        The value: ``bool`` for ``enabled``, ``int`` for ``max_persons``, ``float`` for
        ``detector_hz``.

    Raises:
        CommandError: Unknown name or invalid payload.
    """
    if name not in COMMANDS:
        raise CommandError(f"unknown setting {name[:40]!r}; settable: {', '.join(COMMANDS)}")
    value = _json(payload, max_bytes)
    if name == "enabled":
        if not isinstance(value, bool):
            raise CommandError(f"enabled takes true/false or ON/OFF, got {value!r:.40}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandError(f"{name} takes a number, got {value!r:.40}")
    if name == "max_persons":
        if isinstance(value, float):
            if not value.is_integer():
                raise CommandError(f"max_persons takes an integer, got {value!r}")
            value = int(value)
        if not 1 <= value <= MAX_PERSONS_LIMIT:
            raise CommandError(f"max_persons must be in [1, {MAX_PERSONS_LIMIT}], got {value}")
        return int(value)
    hz = float(value)
    hi = min(detector_hz_max, DETECTOR_HZ_MAX)
    if not (math.isfinite(hz) and DETECTOR_HZ_MIN <= hz <= hi):
        raise CommandError(f"detector_hz must be in [{DETECTOR_HZ_MIN:g}, {hi:g}] Hz, got {hz}")
    return hz
