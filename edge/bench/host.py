"""What machine a benchmark ran on, and what its sensors say while it runs.

Everything here reads the system (``/proc``, ``/sys``, psutil, ``vcgencmd``) and returns plain
JSON-able values; a reading the system does not offer is ``None``, never an error, so the same
code serves a Raspberry Pi, an x86 laptop and a container without sensors.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import sys
import threading
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from edge.comms.system import read_cpu_temp_c, read_throttled_word
from edge.runtime import MANIFEST_NAME, Manifest, runtime_name, sha256_file

logger = logging.getLogger(__name__)

#: CPU features that matter to TFLite/XNNPACK kernels (x86 and Arm spellings).
INTERESTING_FLAGS = (
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw",
    "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8",
    "neon", "vfpv4", "asimd", "asimdhp", "asimddp", "asimdrdm", "fphp", "i8mm", "bf16", "sve",
    "sve2",
)


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's marketing name (x86 ``model name``; on a Pi the board model), or the arch."""
    info = _cpuinfo()
    for key in ("model name", "Model", "Hardware", "cpu model"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", info, re.MULTILINE)
        if m:
            return m.group(1).strip()
    try:
        return Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The :data:`INTERESTING_FLAGS` this CPU reports (``flags`` on x86, ``Features`` on Arm)."""
    m = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", _cpuinfo(), re.MULTILINE)
    have = set(m.group(1).split()) if m else set()
    return [f for f in INTERESTING_FLAGS if f in have]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def runtime_info() -> dict[str, Any]:
    """The TFLite runtime edge-pose uses, and its version."""
    try:
        name: str | None = runtime_name()
    except RuntimeError:
        name = None
    return {"name": name, "version": None if name is None else _version(name)}


def _origin(raw: Mapping[str, Any]) -> str | None:
    """``package==version`` the model came from, when the manifest says."""
    src = raw.get("source")
    if not isinstance(src, Mapping) or not src.get("package"):
        return None
    return f"{src['package']}=={src.get('version', '?')}"


def models_info(manifest: Manifest) -> list[dict[str, Any]]:
    """Every model of the manifest: key, file, sha256, role, variant, precision, scheme, origin."""
    return [{"key": e.key, "file": e.file, "sha256": e.sha256, "role": e.role,
             "variant": e.variant, "precision": e.precision, "scheme": e.scheme,
             "origin": _origin(e.raw)}
            for e in sorted(manifest.models.values(), key=lambda e: e.key)]


def host_info(manifest: Manifest) -> dict[str, Any]:
    """CPU, cores, flags, memory, OS, Python, library and runtime versions, models folder.

    Args:
        manifest: The models in use (their folder and the manifest's own sha256 are reported).

    Returns:
        A JSON-able mapping (see ``edge/bench_schema.json``, ``host``).
    """
    freq = None
    try:
        f = psutil.cpu_freq()
        freq = None if f is None else round(float(f.max or f.current), 1)
    except (OSError, NotImplementedError, AttributeError):
        freq = None
    import cv2
    import numpy as np

    manifest_path = manifest.folder / MANIFEST_NAME
    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "cores_logical": os.cpu_count() or 1,
        "cores_physical": psutil.cpu_count(logical=False),
        "cpu_max_mhz": freq,
        "cpu_flags": cpu_flags(),
        "memory_mb": round(psutil.virtual_memory().total / 2**20),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "runtime": runtime_info(),
        "libraries": {"edge-pose": _version("edge-pose"), "numpy": np.__version__,
                      "opencv": str(cv2.__version__), "psutil": psutil.__version__},
        "models_dir": str(manifest.folder),
        "manifest_sha256": sha256_file(manifest_path) if manifest_path.is_file() else None,
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


class Monitor:
    """Samples RSS, temperature, throttling and load in a thread while a measurement runs.

    Use as a context manager; :meth:`summary` gives peaks and the load at start and end.

    Args:
        period_s: Seconds between samples.
    """

    def __init__(self, period_s: float = 0.2) -> None:
        self.period_s = period_s
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-monitor", daemon=True)
        self.peak_rss = 0
        self.temps: list[float] = []
        self.throttled: int | None = None
        self.load_start: list[float] | None = None
        self.load_end: list[float] | None = None
        self.samples: list[dict[str, Any]] = []
        self._t0 = 0.0
        self._last_slow = -1e9

    def _sample(self) -> None:
        rss = int(self._proc.memory_info().rss)
        self.peak_rss = max(self.peak_rss, rss)
        now = time.perf_counter()
        if now - self._last_slow >= 1.0:  # sensors and vcgencmd are slow: once a second
            self._last_slow = now
            t = read_cpu_temp_c()
            if t is not None:
                self.temps.append(t)
            th = read_throttled_word()
            if th is not None:
                self.throttled = th if self.throttled is None else self.throttled | th
            self.samples.append({"t_s": round(now - self._t0, 2), "rss_mb": round(rss / 2**20, 1),
                                 "temp_c": t, "throttled": th, "load": load_average()})

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self._sample()

    def __enter__(self) -> Monitor:
        self._t0 = time.perf_counter()
        self.load_start = load_average()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._sample()
        self.load_end = load_average()

    def summary(self) -> dict[str, Any]:
        """Peak RSS (MB), max temperature (C, or None), throttling bits, load at start/end."""
        return {"peak_rss_mb": round(self.peak_rss / 2**20, 1),
                "temp_max_c": max(self.temps) if self.temps else None,
                "temp_start_c": self.temps[0] if self.temps else None,
                "throttled": self.throttled,
                "load_start": self.load_start, "load_end": self.load_end}
