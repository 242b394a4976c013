"""Device health for the ``stats`` topic: CPU %, memory, CPU temperature, Pi throttling flags.

Temperature: ``/sys/class/thermal/thermal_zone0/temp`` (the SoC on a Pi), else psutil's sensors;
None when the machine exposes none (many x86 VMs). Throttling: the Pi firmware's
``get_throttled`` word from sysfs (kernel 5.x+), else ``vcgencmd get_throttled``; None elsewhere.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psutil

logger = logging.getLogger(__name__)


THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
THROTTLED_SYSFS = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")

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


def read_throttled_word() -> int | None:
    """The Pi firmware's throttled word (bits in :data:`THROTTLE_BITS`), or None off a Pi."""
    try:
        return int(THROTTLED_SYSFS.read_text().strip(), 16)
    except (OSError, ValueError):
        pass
    exe = shutil.which("vcgencmd")
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


def read_throttled() -> dict[str, Any] | None:
    """The Pi's throttling flags, or None where there is no Pi firmware."""
    word = read_throttled_word()
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


class SystemProbe:
    """Samples this process's CPU and memory, and the device's temperature and throttling."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)  # primes the interval measurement
        self._throttle_ok = True

    def sample(self) -> dict[str, Any]:
        """One sample of the device's health.

        Returns:
            ``cpu_percent`` (this process since the last sample; 100 = one core),
            ``cpu_percent_system``, ``rss_bytes``, ``cpu_temp_c`` and ``throttled`` (None
            where unavailable, e.g. off a Pi).
        """
        throttled = read_throttled() if self._throttle_ok else None
        if throttled is None:
            self._throttle_ok = False  # not a Pi: do not look again
        return {"cpu_percent": round(self._proc.cpu_percent(None), 1),
                "cpu_percent_system": round(psutil.cpu_percent(None), 1),
                "rss_bytes": int(self._proc.memory_info().rss),
                "cpu_temp_c": read_cpu_temp_c(),
                "throttled": throttled}
