"""Device health for the ``stats`` topic: CPU %, memory, CPU temperature, Pi throttling flags.

Temperature: ``/sys/class/thermal/thermal_zone0/temp`` (the SoC on a Pi), else psutil's sensors;
None when the machine exposes none (many x86 VMs). Throttling: the Pi firmware's
``get_throttled`` word from sysfs (kernel 5.x+; the firmware node sits under ``soc`` on a Pi 4
and under ``soc@107c000000`` on a Pi 5), else ``vcgencmd get_throttled``; None elsewhere.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

logger = logging.getLogger(__name__)


THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
#: The firmware's ``get_throttled`` attribute, relative to the sysfs root: Pi 4 (BCM2711), Pi 5
#: (BCM2712), then any other SoC node name a future board may use.
THROTTLED_CANDIDATES = (
    "devices/platform/soc/soc:firmware/get_throttled",
    "devices/platform/soc@107c000000/soc@107c000000:firmware/get_throttled",
)
THROTTLED_GLOB = "devices/platform/soc*/*:firmware/get_throttled"
SYSFS = Path("/sys")

#: Bits of the Pi firmware's throttled word (raspberrypi.com documentation, vcgencmd).
THROTTLE_BITS = {
    0: "under_voltage", 1: "freq_capped", 2: "throttled", 3: "soft_temp_limit",
    16: "under_voltage_occurred", 17: "freq_capped_occurred", 18: "throttled_occurred",
    19: "soft_temp_limit_occurred",
}


def decode_throttled(word: int) -> dict[str, Any]:
    """The flags of a ``get_throttled`` word, plus the word itself as ``raw`` (hex)."""
    flags: dict[str, Any] = {name: bool(word >> bit & 1) for bit, name in THROTTLE_BITS.items()}
    flags["raw"] = f"0x{word:x}"
    return flags


def throttled_paths(sysfs: Path = SYSFS) -> list[Path]:
    """The firmware ``get_throttled`` files present under ``sysfs``, Pi 4 and Pi 5 first."""
    found = [sysfs / rel for rel in THROTTLED_CANDIDATES if (sysfs / rel).is_file()]
    found += [p for p in sorted(sysfs.glob(THROTTLED_GLOB)) if p not in found]
    return found


def read_throttled_word(sysfs: Path = SYSFS, vcgencmd: str | None = "vcgencmd") -> int | None:
    """The Pi firmware's throttled word (bits in :data:`THROTTLE_BITS`), or None.

    Args:
        sysfs: Root of sysfs (a fake tree in tests).
        vcgencmd: Name or path of ``vcgencmd``, tried when no sysfs file reads; None: do not.

    Returns:
        The word, or None off a Pi or when every way of reading it failed this time.
    """
    for path in throttled_paths(sysfs):
        try:
            return int(path.read_text().strip(), 16)
        except (OSError, ValueError) as e:
            logger.debug("reading %s failed: %s", path, e)
    exe = shutil.which(vcgencmd) if vcgencmd else None
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=2,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        logger.debug("vcgencmd get_throttled failed: %s", e)
        return None
    m = re.search(r"throttled=0x([0-9a-fA-F]+)", out)
    return int(m.group(1), 16) if m else None


def read_throttled(sysfs: Path = SYSFS, vcgencmd: str | None = "vcgencmd"
                   ) -> dict[str, Any] | None:
    """The Pi's throttling flags, or None where there is no Pi firmware (or the read failed)."""
    word = read_throttled_word(sysfs, vcgencmd)
    return None if word is None else decode_throttled(word)


def read_cpu_temp_c() -> float | None:
    """CPU temperature, degrees Celsius, or None when the machine exposes none."""
    try:
        return round(int(THERMAL_ZONE.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        pass
    try:
        sensors = psutil.sensors_temperatures()
    except (AttributeError, OSError):
        return None
    for name in ("cpu_thermal", "coretemp", "k10temp", "soc_thermal"):
        if sensors.get(name):
            return round(float(sensors[name][0].current), 1)
    return None


class ThrottleReader:
    """Reads the throttled flags, and after a failed read waits ``retry_s`` before the next try.

    A failed read (no file, a firmware hiccup, ``vcgencmd`` timing out) reports None for a while
    and is then tried again: reporting is never disabled for good, and off a Pi the probing costs
    one attempt per ``retry_s``, not one per stats tick.
    """

    def __init__(self, sysfs: Path = SYSFS, vcgencmd: str | None = "vcgencmd",
                 retry_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        """Sets the reader up.

        Args:
            sysfs: Root of sysfs (a fake tree in tests).
            vcgencmd: Name or path of ``vcgencmd``; None never runs it.
            retry_s: Seconds to wait after a failed read before trying again.
            clock: Monotonic clock, seconds, the wait is measured with.
        """
        self._sysfs = sysfs
        self._vcgencmd = vcgencmd
        self._retry_s = retry_s
        self._clock = clock
        self._next_try = float("-inf")

    def read(self) -> dict[str, Any] | None:
        """The flags (see :func:`decode_throttled`), or None while waiting after a failure."""
        now = self._clock()
        if now < self._next_try:
            return None
        flags = read_throttled(self._sysfs, self._vcgencmd)
        self._next_try = now + self._retry_s if flags is None else float("-inf")
        return flags


class SystemProbe:
    """Samples this process's CPU and memory, and the device's temperature and throttling."""

    def __init__(self, throttle: ThrottleReader | None = None) -> None:
        """Sets the probe up.

        Args:
            throttle: The throttle reader (default: the real sysfs and ``vcgencmd``).
        """
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)  # primes the interval measurement
        self._throttle = throttle or ThrottleReader()

    def sample(self) -> dict[str, Any]:
        """One sample of the device's health.

        Returns:
            ``cpu_percent`` (this process since the last sample; 100 = one core),
            ``cpu_percent_system``, ``rss_bytes``, ``cpu_temp_c`` and ``throttled`` (None
            where unavailable, e.g. off a Pi, or after a failed read until it is retried).
        """
        return {"cpu_percent": round(self._proc.cpu_percent(None), 1),
                "cpu_percent_system": round(psutil.cpu_percent(None), 1),
                "rss_bytes": int(self._proc.memory_info().rss),
                "cpu_temp_c": read_cpu_temp_c(),
                "throttled": self._throttle.read()}
