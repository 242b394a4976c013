"""A sustained run: fps, latency and temperature over time (10 minutes by default).

Runs edge-pose end to end through the realtime scheduler on frames of ``--people`` real people
(composed as ``edge-bench`` does) for ``--minutes``, and records every ``--window`` seconds: the
annotations per second, capture-to-annotation latency p50/p99, people seen, CPU temperature,
the Raspberry Pi's throttling bits, RSS and the load average. Writes a JSON timeline and a PNG
plot, and prints the last tenth of the run against the first (a device that throttles shows it
there) and the RSS growth (a leak would).
Usage::

    .venv/bin/python bench/sustained.py                      # 10 minutes, 2 people
    .venv/bin/python bench/sustained.py --minutes 0.1        # a smoke run of 6 s
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from edge.bench.cli import find_person_clips
from edge.bench.e2e import E2ESettings, run_scenario
from edge.bench.host import (
    host_info,
    load_average,
)
from edge.bench.people import ComposedFrames
from edge.bench.stages import DEFAULT_BUDGETS
from edge.comms.system import read_cpu_temp_c, read_throttled_word
from edge.runtime import load_manifest
from edge.sources.open import DEMO_CLIP

HERE = Path(__file__).resolve().parent


class Timeline:
    """Collects per-annotation figures and closes a window every ``window_s`` seconds."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.t0 = 0.0
        self.start = 0.0
        self.lat: list[float] = []
        self.people: list[int] = []
        self.rows: list[dict[str, Any]] = []

    def tick(self, latency_ms: float, people: int) -> None:
        """One annotation (called from the core loop)."""
        if not self.t0:
            self.t0 = self.start = time.monotonic()
        self.lat.append(latency_ms)
        self.people.append(people)
        now = time.monotonic()
        if now - self.start >= self.window_s:
            self.close(now)

    def close(self, now: float) -> None:
        """Ends the current window."""
        span = now - self.start
        if not self.lat or span <= 0:
            return
        a = np.asarray(self.lat)
        self.rows.append({
            "t_s": round(now - self.t0, 1), "fps": round(len(a) / span, 2),
            "latency_p50_ms": round(float(np.median(a)), 1),
            "latency_p99_ms": round(float(np.percentile(a, 99)), 1),
            "people_seen": round(float(np.mean(self.people)), 2),
            "temp_c": read_cpu_temp_c(), "throttled": read_throttled_word(),
            "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
            "load": load_average()})
        print(f"t={self.rows[-1]['t_s']:7.1f} s  fps {self.rows[-1]['fps']:5.1f}  p50 "
              f"{self.rows[-1]['latency_p50_ms']:6.1f} ms  temp {self.rows[-1]['temp_c']}  "
              f"load {self.rows[-1]['load']}", flush=True)
        self.start, self.lat, self.people = now, [], []


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Plots fps and latency (left), temperature (right) against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t_s"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(t, [r["fps"] for r in rows], "o-", label="fps")
    ax.plot(t, [r["latency_p50_ms"] / 10 for r in rows], "s--", label="latency p50 / 10, ms")
    ax.plot(t, [(r["load"] or [np.nan])[0] for r in rows], "k:", label="load average, 1 min")
    ax.set_xlabel("seconds")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    temps = [r["temp_c"] for r in rows]
    if any(x is not None for x in temps):
        ax2.plot(t, [np.nan if x is None else x for x in temps], "r^-", label="temp C")
        ax2.set_ylabel("CPU temperature, C")
    else:
        ax2.set_yticks([])
        ax2.text(0.99, 0.02, "no temperature sensor", transform=ax.transAxes, ha="right")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower left")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    """Runs the sustained scenario and writes its timeline."""
    p = argparse.ArgumentParser(description="edge-pose sustained run: fps and temperature "
                                            "over time")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--people", type=int, default=2)
    p.add_argument("--window", type=float, default=10.0, help="seconds per timeline point")
    p.add_argument("--feed-fps", type=float, default=30.0)
    p.add_argument("--detector-hz", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--landmark", default="full")
    p.add_argument("--precision", default=None, help="default: int8 if shipped, else float")
    p.add_argument("--clip", type=Path, action="append", default=None)
    p.add_argument("--out", type=Path, default=HERE / "results" / "sustained")
    args = p.parse_args()
    if args.minutes <= 0 or args.people < 1 or args.window <= 0:
        p.error("--minutes and --window must be > 0, --people >= 1")
    manifest = load_manifest()
    prec = args.precision or ("int8" if any(
        e.role == "landmark" and e.variant == args.landmark and e.precision == "int8"
        for e in manifest.models.values()) else "float")
    clips = find_person_clips(manifest, args.clip or [DEMO_CLIP], 320, None)
    window = min(args.window, args.minutes * 60 / 3)
    timeline = Timeline(window)
    s = E2ESettings(landmark=args.landmark, precision=prec, threads=args.threads,
                    feed_fps=args.feed_fps, detector_hz=args.detector_hz,
                    seconds=args.minutes * 60, warmup_s=2.0, budgets=DEFAULT_BUDGETS)
    summary = run_scenario(ComposedFrames(clips, args.people), s, manifest,
                           on_tick=timeline.tick)
    timeline.close(time.monotonic())
    rows = timeline.rows
    out: dict[str, Any] = {"host": host_info(manifest), "settings": vars(args) | {
        "precision": prec, "window": window}, "summary": summary, "timeline": rows}
    if len(rows) >= 2:
        # The first and the last tenth of the run (at least one window each), as a ratio:
        # below 1 means the device slowed down (heat, throttling, or load from elsewhere).
        k = max(1, len(rows) // 10)
        first = float(np.mean([r["fps"] for r in rows[:k]]))
        last = float(np.mean([r["fps"] for r in rows[-k:]]))
        out["first_tenth_fps"], out["last_tenth_fps"] = round(first, 2), round(last, 2)
        out["last_over_first_fps"] = round(last / max(first, 1e-9), 3)
        rss = [r["rss_mb"] for r in rows]
        out["rss_growth_mb"] = round(rss[-1] - rss[0], 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    js = args.out.with_suffix(".json")
    js.write_text(json.dumps(out, indent=1, default=str) + "\n", encoding="utf-8")
    png = args.out.with_suffix(".png")
    plot(rows, png, f"edge-pose sustained, {args.people} people, {args.landmark}/{prec} "
                    f"x{args.threads}, {out['host']['cpu_model']}, {os.cpu_count()} cores")
    print(f"{summary['fps']:.1f} fps over {summary['seconds']:.0f} s; fps in the last tenth "
          f"over the first {out.get('last_over_first_fps')}; peak RSS {summary['peak_rss_mb']} MB; "
          f"max temp {summary['temp_max_c']}; throttled {summary['throttled']}; wrote {js}, "
          f"{png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
