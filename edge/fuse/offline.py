"""Offline fusion of several ``annotations.jsonl`` files (one per device).

The files' lines are merged in capture-time order and pushed through the same
:class:`~edge.fuse.sync.Synchroniser` and :class:`~edge.fuse.fuser.Fuser` as the live service,
with ``now`` taken from the capture times themselves, so a rerun gives identical output.
Malformed lines are skipped, counted and named (file and line), never fatal.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.fuse.calib import Calibration
from edge.fuse.fuser import FusedFrame, Fuser, FuseSettings
from edge.fuse.sync import Synchroniser
from edge.fuse.views import PayloadError, ViewFrame, parse_annotation

logger = logging.getLogger(__name__)

#: Grouping tolerance when a file's frame period cannot be measured (half of 30 Hz).
DEFAULT_PERIOD_S = 1.0 / 30.0


@dataclass
class OfflineReport:
    """What an offline run met besides the fused frames.

    Attributes:
        bad_lines: ``(file, line number, reason)`` of every malformed line skipped.
        devices_in_files: File -> the device IDs its lines carry.
        sync: The synchroniser's stats at the end.
        fuser: The fuser's stats at the end.
        warnings: Human-readable warnings (clock skew, unmatched devices, size mismatch).
    """

    bad_lines: list[tuple[str, int, str]] = field(default_factory=list)
    devices_in_files: dict[str, list[str]] = field(default_factory=dict)
    sync: dict[str, Any] = field(default_factory=dict)
    fuser: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def read_view_frames(path: Path, report: OfflineReport | None = None) -> list[ViewFrame]:
    """Reads one device's annotations file; malformed lines are skipped and recorded.

    Args:
        path: ``annotations.jsonl``.
        report: Receives the skipped lines (file, line number from 1, reason).

    Returns:
        The frames in file order.

    Raises:
        OSError: The file cannot be read.
    """
    frames = []
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                frames.append(parse_annotation(line))
            except PayloadError as e:
                logger.warning("%s:%d: skipped: %s", path, n, e)
                if report is not None:
                    report.bad_lines.append((str(path), n, str(e)))
    return frames


def frame_period(frames: Sequence[ViewFrame]) -> float:
    """Median capture-time step of a device's frames, s (:data:`DEFAULT_PERIOD_S` if unknown)."""
    ts = np.diff(np.asarray([f.ts for f in frames], np.float64))
    ts = ts[ts > 0]
    return float(np.median(ts)) if ts.size else DEFAULT_PERIOD_S


def fuse_jsonl(paths: Sequence[Path], calib: Calibration, devices: dict[str, str],
               settings: FuseSettings | None = None, report: OfflineReport | None = None,
               offsets_s: dict[str, float] | None = None) -> Iterator[FusedFrame]:
    """Fuses the devices' annotation files.

    Args:
        paths: One ``annotations.jsonl`` per device.
        calib: The scene's calibration.
        devices: Device ID -> camera name (frames of other devices are counted and ignored).
        settings: Fusion settings (default ``FuseSettings()``); the grouping tolerance defaults
            to half the files' shortest median frame period.
        report: Filled with skipped lines, warnings and the final stats.
        offsets_s: Device ID -> seconds added to its frames' capture times (cameras started
            apart; see ``bench.fuse_bench.estimate_offsets``).

    Yields:
        Fused frames in capture-time order.
    """
    settings = settings if settings is not None else FuseSettings()
    report = report if report is not None else OfflineReport()
    per_file = [read_view_frames(p, report) for p in paths]
    for p, frames in zip(paths, per_file, strict=True):
        report.devices_in_files[str(p)] = sorted({f.device for f in frames})
    period = min((frame_period(f) for f in per_file if f), default=DEFAULT_PERIOD_S)
    sync = Synchroniser(list(devices), settings.tolerance_for(period), settings.max_wait_s,
                        max_clock_offset_s=settings.max_clock_offset_s, offsets_s=offsets_s)
    fuser = Fuser(calib, devices, settings)
    # Merged in capture-time order; ties by file order, then file position.
    off = offsets_s or {}
    merged = heapq.merge(*[[(f.ts + off.get(f.device, 0.0), i, k, f)
                            for k, f in enumerate(frames)] for i, frames in enumerate(per_file)])
    for ts, _, _, frame in merged:
        for group in sync.push(frame, ts):
            yield fuser.fuse(group)
    for group in sync.flush():
        yield fuser.fuse(group)
    report.sync = sync.stats()
    report.fuser = fuser.stats()
    report.warnings.extend(_warnings(report, devices, settings.min_views))


def _warnings(report: OfflineReport, devices: dict[str, str], min_views: int) -> list[str]:
    out = []
    for d, st in report.sync.get("devices", {}).items():
        if st["frames"] == 0:
            out.append(f"device {d}: no frames in the input")
    sizes: dict[str, int] = report.sync.get("group_sizes", {})
    lonely = sum(v for k, v in sizes.items() if int(k) < min_views)
    total = sum(sizes.values())
    if total and lonely > total // 2:
        out.append(f"{lonely} of {total} frame groups have fewer than {min_views} devices: "
                   "their capture times do not match within the tolerance (clocks apart, or "
                   "files of different takes?); nothing is fused from them")
    for d, n in report.sync.get("unknown_devices", {}).items():
        out.append(f"device {d}: {n} frames ignored: not in the device map "
                   f"({', '.join(f'{k}={v}' for k, v in devices.items())})")
    for d in report.fuser.get("size_mismatch_devices", []):
        out.append(f"device {d}: its image size does not match camera {devices[d]}'s "
                   "calibration; not fused")
    if report.bad_lines:
        out.append(f"{len(report.bad_lines)} malformed line(s) skipped")
    return out
