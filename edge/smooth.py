"""One-Euro filtering of keypoints (Casiez, Roussel, Vogel, CHI 2012), vectorised, per track.

A first-order low-pass filter whose cutoff rises with speed: ``fc = min_cutoff + beta * |dx|``,
where ``dx`` is the derivative of the raw signal low-passed at ``d_cutoff``. Slow signals are
smoothed hard (little jitter), fast ones barely (little lag). Written by hand because it is
twenty lines and no well-kept library filters arbitrary numpy arrays with per-element missing
values; the update follows the authors' reference implementation (derivative of the *raw*
values, ``alpha = 1 / (1 + tau / dt)`` with ``tau = 1 / (2 pi fc)``).

Pure math: no I/O, no clocks (timestamps are passed in, monotonic seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.types import F32, I64

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class OneEuroConfig:
    """Parameters of a One-Euro filter.

    ``beta`` multiplies a speed, so it depends on the signal's unit: about 0.05 per (px/s) for
    image keypoints, 20 per (m/s) for metric ones, give a similar cutoff for a walking person.

    Attributes:
        min_cutoff: Cutoff frequency at rest, Hz (> 0). Lower = less jitter, more lag.
        beta: Cutoff increase per unit of speed, Hz per (unit/s) (>= 0). Higher = less lag.
        d_cutoff: Cutoff of the derivative's low-pass, Hz (> 0).
    """

    min_cutoff: float = 1.0
    beta: float = 0.05
    d_cutoff: float = 1.0

    def __post_init__(self) -> None:
        for name in ("min_cutoff", "d_cutoff"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0.0):
                raise ValueError(f"OneEuroConfig.{name} must be > 0 Hz, got {v}")
        if not (math.isfinite(self.beta) and self.beta >= 0.0):
            raise ValueError(f"OneEuroConfig.beta must be >= 0, got {self.beta}")


# Defaults of PoseSmoother: image keypoints in px, metric keypoints in m.
DEFAULT_2D = OneEuroConfig(min_cutoff=1.0, beta=0.05, d_cutoff=1.0)
DEFAULT_3D = OneEuroConfig(min_cutoff=1.0, beta=20.0, d_cutoff=1.0)


def _alpha(cutoff: F64 | float, dt: F64) -> F64:
    """Smoothing factor of a first-order low-pass for a cutoff (Hz) and a period (s)."""
    tau = 1.0 / (2.0 * np.pi * np.asarray(cutoff, np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        a = 1.0 / (1.0 + tau / dt)
    return np.where(dt > 0.0, a, 0.0)


class OneEuroFilter:
    """One-Euro filter over an array of any fixed shape; each element is filtered on its own.

    Missing values (NaN) are neither used nor spread: such an element's output is NaN for that
    call and its state is kept, so when it comes back it continues from its last estimate with
    the true elapsed time. An element seen for the first time passes through unchanged.
    """

    def __init__(self, config: OneEuroConfig | None = None) -> None:
        """Creates a filter with no state.

        Args:
            config: Parameters; defaults to ``OneEuroConfig()``.
        """
        self.config = config if config is not None else OneEuroConfig()
        self.reset()

    def reset(self) -> None:
        """Forgets the state, the shape and the last timestamp."""
        self._x: F64 | None = None  # filtered value; NaN where never seen
        self._raw: F64 | None = None  # last raw value
        self._dx: F64 | None = None  # filtered derivative, unit/s
        self._t_el: F64 | None = None  # time of each element's last observation, s
        self._t: float | None = None

    @property
    def shape(self) -> tuple[int, ...] | None:
        """Shape of the filtered arrays, or None before the first call."""
        return None if self._x is None else tuple(self._x.shape)

    def __call__(self, x: npt.NDArray[Any], t: float) -> npt.NDArray[Any]:
        """Filters one sample.

        Args:
            x: Array of any shape (the same on every call), floating point, e.g. (33, 2) px or
                (33, 3) m; NaN marks a missing element.
            t: Sample time, monotonic seconds, not before the previous call's. A repeated time
                (dt = 0) leaves the state unchanged and returns the current estimate.

        Returns:
            A new array of ``x``'s shape and dtype: the filtered values (NaN where ``x`` is).

        Raises:
            ValueError: ``x`` changed shape or is not floating point, or ``t`` is before the
                previous call's or not finite.
        """
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"OneEuroFilter: values must be floating point, got {x.dtype}")
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"OneEuroFilter: timestamp must be finite, got {t}")
        if self._t is not None and t < self._t:
            raise ValueError(f"OneEuroFilter: timestamp {t} is before the previous one "
                             f"{self._t}; timestamps must be monotonic seconds")
        if self._x is not None and x.shape != self._x.shape:
            raise ValueError(f"OneEuroFilter: shape changed from {self._x.shape} to {x.shape}; "
                             "reset() first")
        v = x.astype(np.float64)
        seen = np.isfinite(v)
        if self._x is None or self._raw is None or self._dx is None or self._t_el is None:
            self._x = np.full(v.shape, np.nan)
            self._raw = np.full(v.shape, np.nan)
            self._dx = np.zeros(v.shape)
            self._t_el = np.full(v.shape, np.nan)
        self._t = t
        known = seen & np.isfinite(self._x)
        new = seen & ~known
        dt = np.where(known, t - np.nan_to_num(self._t_el, nan=t), 0.0)
        step = known & (dt > 0.0)
        cfg = self.config
        with np.errstate(divide="ignore", invalid="ignore"):
            dx_raw = np.where(step, (v - self._raw) / np.where(step, dt, 1.0), 0.0)
        dx = np.where(step, self._dx + _alpha(cfg.d_cutoff, dt) * (dx_raw - self._dx), self._dx)
        cutoff = cfg.min_cutoff + cfg.beta * np.abs(dx)
        xf = np.where(step, self._x + _alpha(cutoff, dt) * (v - self._x), self._x)
        # First sight of an element: take it as is, derivative 0.
        xf = np.where(new, v, xf)
        dx = np.where(new, 0.0, dx)
        self._x = xf
        self._dx = dx
        self._raw = np.where(step | new, v, self._raw)
        self._t_el = np.where(step | new, t, self._t_el)
        out = np.where(seen, xf, np.nan)
        return out.astype(x.dtype)


@dataclass(frozen=True, eq=False)
class SmoothedPoses:
    """Smoothed keypoints of n tracks, rows in the order of the ids given.

    Attributes:
        ids: (n,) int64, track IDs.
        keypoints: (n, J, 2) float32, px (NaN where the input was).
        world: (n, K, 3) float32, m, or None when no metric keypoints were given.
    """

    ids: I64
    keypoints: F32
    world: F32 | None


class PoseSmoother:
    """One pair of One-Euro filters (image px, metric m) per track.

    Call it every tick with every current track. A track's filters are created on its first
    call and reset when it starts again: when ``starts`` (``Tracks.first_seen``) changes for its
    ID (an ID re-used after a loss) or after a call in which the ID was absent. IDs absent from
    a call are forgotten (the track left or was merged).
    """

    def __init__(self, config_2d: OneEuroConfig | None = None,
                 config_3d: OneEuroConfig | None = None) -> None:
        """Creates a smoother with no tracks.

        Args:
            config_2d: Filter of image keypoints (px); defaults to ``DEFAULT_2D``.
            config_3d: Filter of metric keypoints (m); defaults to ``DEFAULT_3D``.
        """
        self.config_2d = config_2d if config_2d is not None else DEFAULT_2D
        self.config_3d = config_3d if config_3d is not None else DEFAULT_3D
        self.reset()

    def reset(self) -> None:
        """Forgets every track and the last timestamp."""
        self._filters: dict[int, tuple[float | None, OneEuroFilter, OneEuroFilter]] = {}
        self._t: float | None = None

    @property
    def track_ids(self) -> list[int]:
        """IDs that currently have filters, ascending."""
        return sorted(self._filters)

    def update(self, ids: I64, t: float, keypoints: F32, world: F32 | None = None,
               starts: npt.NDArray[np.float64] | None = None) -> SmoothedPoses:
        """Smooths one tick of keypoints.

        Args:
            ids: (n,) int64, unique track IDs, one per row.
            t: Capture time, monotonic seconds, not before the previous call's.
            keypoints: (n, J, 2) float32, px; NaN for missing joints.
            world: (n, K, 3) float32, m, or None.
            starts: (n,) float64, each track's start time (``Tracks.first_seen``); a change for
                an ID resets its filters. None: only absence resets.

        Returns:
            New :class:`SmoothedPoses` (inputs are not modified).

        Raises:
            ValueError: Shapes disagree, ids repeat, or ``t`` goes back in time.
        """
        if not isinstance(ids, np.ndarray) or ids.ndim != 1 or ids.dtype != np.int64:
            raise ValueError("PoseSmoother: ids must be a (n,) int64 array")
        n = int(ids.shape[0])
        if np.unique(ids).shape[0] != n:
            raise ValueError(f"PoseSmoother: ids must be unique, got {ids.tolist()}")
        if keypoints.ndim != 3 or keypoints.shape[0] != n or keypoints.shape[2] != 2:
            raise ValueError(f"PoseSmoother: keypoints must be ({n}, J, 2), "
                             f"got {keypoints.shape}")
        if world is not None and (world.ndim != 3 or world.shape[0] != n
                                  or world.shape[2] != 3):
            raise ValueError(f"PoseSmoother: world must be ({n}, K, 3), got {world.shape}")
        if starts is not None and starts.shape != (n,):
            raise ValueError(f"PoseSmoother: starts must be ({n},), got {starts.shape}")
        t = float(t)
        if not math.isfinite(t) or (self._t is not None and t < self._t):
            raise ValueError(f"PoseSmoother: timestamp {t} is before the previous one "
                             f"{self._t} or not finite; timestamps must be monotonic seconds")
        self._t = t
        kept: dict[int, tuple[float | None, OneEuroFilter, OneEuroFilter]] = {}
        out_2d = np.empty(keypoints.shape, np.float32)
        out_3d = None if world is None else np.empty(world.shape, np.float32)
        for row, tid in enumerate(ids.tolist()):
            start = None if starts is None else float(starts[row])
            entry = self._filters.get(tid)
            if entry is None or entry[0] != start:
                entry = (start, OneEuroFilter(self.config_2d), OneEuroFilter(self.config_3d))
            kept[tid] = entry
            out_2d[row] = entry[1](keypoints[row].astype(np.float32), t)
            if out_3d is not None and world is not None:
                out_3d[row] = entry[2](world[row].astype(np.float32), t)
        self._filters = kept
        return SmoothedPoses(ids.copy(), out_2d, out_3d)
