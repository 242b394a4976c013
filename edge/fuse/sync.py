"""Grouping the devices' frames by capture time.

Frames arrive one by one (:meth:`Synchroniser.push`), each with the caller's ``now`` (live:
the worker's clock at arrival; offline: the frame's own capture time, so results are
deterministic). Groups are formed in capture-time order around the oldest waiting frame (the
anchor): each device contributes its frame closest to the anchor within ``tolerance_s``. A group
leaves as soon as every *active* device (one heard from within ``inactive_after_s``) has a frame
in it, or when its anchor has waited ``max_wait_s``: a device that lags or dropped out is left
out of that group, never waited on for ever.

Devices whose clock disagrees with the others' (their ``now - ts`` offset differs from the
median device's by more than ``max_clock_offset_s``, e.g. clocks 10 s apart) are quarantined:
their frames are counted and not grouped, so nothing is fused from inconsistent times, and
:meth:`Synchroniser.stats` says so. Frames of unknown devices and frames arriving after their
time's group already left are counted and dropped.

Pure logic: no clocks are read here (``now`` is passed in), no I/O.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.fuse.views import ViewFrame

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class FrameGroup:
    """Frames of several devices taken at (about) one time.

    Attributes:
        ts: Capture time of the group, s: the median of its frames' ``ts`` (each plus its
            device's clock offset, if any).
        frames: Device ID -> its frame (devices left out are absent).
        offsets_s: Device ID -> the clock offset added to its frames' ``ts`` (0 if absent).
    """

    ts: float
    frames: dict[str, ViewFrame]
    offsets_s: dict[str, float] = field(default_factory=dict)

    @property
    def skew_s(self) -> dict[str, float]:
        """Device ID -> its frame's (offset) ``ts`` minus the group's, s."""
        return {d: f.ts + self.offsets_s.get(d, 0.0) - self.ts for d, f in self.frames.items()}


@dataclass
class _Pending:
    frame: ViewFrame
    ts: float  # the frame's ts plus its device's offset
    arrived: float


@dataclass
class _Device:
    pending: deque[_Pending] = field(default_factory=deque)
    last_arrival: float | None = None
    offsets: deque[float] = field(default_factory=lambda: deque(maxlen=32))
    skews: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    frames: int = 0
    grouped: int = 0
    late: int = 0
    overflow: int = 0
    clock_rejected: int = 0
    quarantined: bool = False


class Synchroniser:
    """Groups frames of several devices by capture time (see the module's docstring)."""

    def __init__(self, devices: Sequence[str], tolerance_s: float, max_wait_s: float,
                 inactive_after_s: float | None = None, max_clock_offset_s: float = 2.0,
                 max_pending: int = 256, offsets_s: Mapping[str, float] | None = None
                 ) -> None:
        """Creates a synchroniser with nothing pending.

        Args:
            devices: The device IDs to group (others are counted as unknown and dropped).
            tolerance_s: Largest capture-time difference within a group, s (> 0; default of
                the service: half a frame period).
            max_wait_s: Longest a group waits for missing devices after its first frame
                arrived, s (>= 0).
            inactive_after_s: A device silent this long is not waited for at all;
                default ``max(1 s, 5 * max_wait_s)``.
            max_clock_offset_s: A device whose ``now - ts`` differs from the median device's
                by more than this is quarantined (clock out of step).
            max_pending: Frames kept per device; the oldest beyond are dropped and counted.
            offsets_s: Device ID -> seconds added to its frames' ``ts`` (a known clock or
                trigger offset, e.g. cameras started a few frames apart).

        Raises:
            ValueError: No devices, repeated devices, or a bad duration.
        """
        if not devices:
            raise ValueError("Synchroniser: no devices")
        if len(set(devices)) != len(devices):
            raise ValueError(f"Synchroniser: devices repeat: {list(devices)}")
        if not tolerance_s > 0 or not max_wait_s >= 0 or not max_clock_offset_s > 0:
            raise ValueError("Synchroniser: tolerance_s and max_clock_offset_s must be > 0, "
                             "max_wait_s >= 0")
        self.devices = tuple(devices)
        self.tolerance_s = float(tolerance_s)
        self.max_wait_s = float(max_wait_s)
        self.inactive_after_s = (max(1.0, 5.0 * max_wait_s) if inactive_after_s is None
                                 else float(inactive_after_s))
        self.max_clock_offset_s = float(max_clock_offset_s)
        self.max_pending = int(max_pending)
        self.offsets_s = {d: float(o) for d, o in (offsets_s or {}).items()}
        unknown = sorted(set(self.offsets_s) - set(self.devices))
        if unknown or not all(np.isfinite(list(self.offsets_s.values()))):
            raise ValueError(f"Synchroniser: offsets for unknown devices {unknown} or not "
                             "finite")
        self.reset()

    def reset(self) -> None:
        """Forgets every pending frame and every count."""
        self._dev = {d: _Device() for d in self.devices}
        self._unknown: dict[str, int] = {}
        self._last_ts: float | None = None
        self._groups = 0
        self._sizes: dict[int, int] = {}
        self._start: float | None = None

    # ---------------------------------------------------------------- input

    def push(self, frame: ViewFrame, now: float) -> list[FrameGroup]:
        """Adds one frame; returns the groups that are now complete or expired.

        Args:
            frame: A device's frame.
            now: Arrival time, s, on the caller's clock (monotonic in calls).

        Returns:
            Groups in capture-time order (possibly none).
        """
        if self._start is None:
            self._start = now
        dev = self._dev.get(frame.device)
        if dev is None:
            n = self._unknown.get(frame.device, 0)
            if n == 0:
                logger.warning("frames of unknown device %r are ignored (known: %s); add it "
                               "to the devices of this scene", frame.device,
                               ", ".join(self.devices))
            self._unknown[frame.device] = n + 1
            return self.poll(now)
        ts = frame.ts + self.offsets_s.get(frame.device, 0.0)
        dev.frames += 1
        dev.last_arrival = now
        dev.offsets.append(now - ts)
        self._update_quarantine(frame.device)
        if dev.quarantined:
            dev.clock_rejected += 1
            return self.poll(now)
        if self._last_ts is not None and ts <= self._last_ts:
            # Its moment's group has left: taking it now would put a group out of order.
            dev.late += 1
            return self.poll(now)
        dev.pending.append(_Pending(frame, ts, now))
        if len(dev.pending) > self.max_pending:
            dev.pending.popleft()
            dev.overflow += 1
        return self.poll(now)

    def _update_quarantine(self, device: str) -> None:
        offsets = {d: statistics.median(s.offsets) for d, s in self._dev.items() if s.offsets}
        if len(offsets) < 2:
            return
        ref = statistics.median(offsets.values())
        for d, off in offsets.items():
            s = self._dev[d]
            bad = abs(off - ref) > self.max_clock_offset_s
            if bad != s.quarantined:
                s.quarantined = bad
                if bad:
                    s.pending.clear()
                    logger.warning("device %s: its clock is %.3f s off the other devices'; "
                                   "its frames are not fused until it agrees (check NTP)",
                                   d, off - ref)
                else:
                    logger.warning("device %s: its clock agrees again; fusing it", d)

    # ---------------------------------------------------------------- output

    def _anchor(self) -> _Pending | None:
        best: _Pending | None = None
        for s in self._dev.values():
            if s.pending and (best is None or s.pending[0].ts < best.ts):
                best = s.pending[0]
        return best

    def _match(self, ts: float) -> dict[str, int]:
        """Device -> index of its pending frame closest to ``ts`` within the tolerance."""
        out = {}
        for d, s in self._dev.items():
            best, best_dt = -1, self.tolerance_s
            for i, p in enumerate(s.pending):
                dt = abs(p.ts - ts)
                if dt <= best_dt:
                    best, best_dt = i, dt
                if p.ts > ts + self.tolerance_s:
                    break
            if best >= 0:
                out[d] = best
        return out

    def _take(self, match: dict[str, int]) -> FrameGroup:
        frames = {}
        times = []
        for d, i in match.items():
            s = self._dev[d]
            frames[d] = s.pending[i].frame
            times.append(s.pending[i].ts)
            for _ in range(i + 1):  # frames before the matched one can no longer be grouped
                s.pending.popleft()
            s.late += i
            s.grouped += 1
        ts = float(np.median(times))
        group = FrameGroup(ts, frames, {d: self.offsets_s.get(d, 0.0) for d in frames})
        for d, sk in group.skew_s.items():
            self._dev[d].skews.append(sk)
        self._last_ts = ts if self._last_ts is None else max(self._last_ts, ts)
        self._groups += 1
        self._sizes[len(frames)] = self._sizes.get(len(frames), 0) + 1
        return group

    def poll(self, now: float) -> list[FrameGroup]:
        """Returns the groups complete or waited out by ``now`` (in capture-time order)."""
        out = []
        while (anchor := self._anchor()) is not None:
            match = self._match(anchor.ts)
            # Active: heard from lately, or not yet heard from while the run is young.
            start = now if self._start is None else self._start
            active = [d for d, s in self._dev.items() if not s.quarantined
                      and now - (start if s.last_arrival is None else s.last_arrival)
                      <= self.inactive_after_s]
            complete = all(d in match for d in active)
            if not complete and now - anchor.arrived < self.max_wait_s:
                break
            out.append(self._take(match))
        return out

    def flush(self) -> list[FrameGroup]:
        """Returns every pending frame as groups (end of input), in capture-time order."""
        out = []
        while (anchor := self._anchor()) is not None:
            out.append(self._take(self._match(anchor.ts)))
        return out

    # ---------------------------------------------------------------- stats

    @property
    def skew_s(self) -> dict[str, dict[str, float | None]]:
        """Device -> ``{"p50": ..., "max": ...}`` of |its ts - its group's ts|, s (last 1000)."""
        out: dict[str, dict[str, float | None]] = {}
        for d, s in self._dev.items():
            a = np.abs(np.asarray(s.skews, np.float64))
            out[d] = ({"p50": float(np.median(a)), "max": float(a.max())} if a.size
                      else {"p50": None, "max": None})
        return out

    def stats(self) -> dict[str, Any]:
        """Counts per device, unknown devices, groups by size and the skew.

        Returns:
            Per device: frames, grouped, late, overflow, clock-rejected, clock out of step,
            pending and skew; unknown devices with their frame counts; groups by size.
        """
        skew = self.skew_s
        return {
            "groups": self._groups,
            "group_sizes": {str(k): v for k, v in sorted(self._sizes.items())},
            "unknown_devices": dict(self._unknown),
            "devices": {d: {"frames": s.frames, "grouped": s.grouped, "late": s.late,
                            "overflow": s.overflow, "clock_rejected": s.clock_rejected,
                            "clock_out_of_step": s.quarantined, "pending": len(s.pending),
                            "skew_s": skew[d]}
                        for d, s in self._dev.items()},
        }
