"""``edge-bench``: is this machine good enough, and did a change make edge-pose faster?

Measures each stage alone (all thread counts and precisions), then the whole pipeline on frames
of 1, 2, 4, 6... real people; prints a table and optionally writes JSON, Markdown and a PNG plot,
or compares with an earlier JSON file. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.bench import report
from edge.bench.e2e import E2ESettings, run_interleaved
from edge.bench.host import (
    host_info,
    load_average,
    models_info,
)
from edge.bench.people import ComposedFrames, PersonClip, extract_person_clips
from edge.bench.stages import DEFAULT_BUDGETS, STAGE_NAMES, build_cells, cell_result, measure
from edge.comms.system import read_cpu_temp_c, read_throttled_word
from edge.config import Config
from edge.detect import PoseDetector
from edge.runtime import Manifest, ModelError, load_manifest, load_model
from edge.sources.base import SourceError
from edge.sources.open import DEMO_CLIP
from edge.types import U8

logger = logging.getLogger("edge.bench")

PRECISIONS = ("float", "int8")
LANDMARKS = ("lite", "full", "heavy")


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers"
                                         ) from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give integers >= 1, e.g. 1,2,4")
    return sorted(set(vals))


def _choices(allowed: Sequence[str]) -> Any:
    def parse(text: str) -> list[str]:
        vals = [x.strip() for x in text.split(",") if x.strip()]
        if vals == ["all"]:
            return list(allowed)
        bad = [v for v in vals if v not in allowed]
        if not vals or bad:
            raise argparse.ArgumentTypeError(
                f"{text!r}: choose from {', '.join(allowed)} (comma-separated) or 'all'")
        return vals
    return parse


def _positive(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
        return v
    return parse


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return v


def _frame_size(text: str) -> tuple[int, int] | None:
    if text == "native":
        return None
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give WIDTHxHEIGHT (e.g. 1280x720) or "
                                         "'native'") from None
    if w < 64 or h < 64:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 64x64")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    """The ``edge-bench`` argument parser."""
    p = argparse.ArgumentParser(
        prog="edge-bench",
        description="Measure edge-pose on this machine: each stage alone against its budget, "
                    "and end-to-end fps, latency, memory and temperature against the number "
                    "of people.")
    g = p.add_argument_group("stages alone")
    g.add_argument("--threads", type=_int_list, default=None, metavar="N,N",
                   help="interpreter thread counts (default: 1..the number of cores)")
    g.add_argument("--precision", type=_choices(PRECISIONS), default=list(PRECISIONS),
                   metavar="P,P", help="float, int8 or all (default: all the manifest has)")
    g.add_argument("--landmark", type=_choices(LANDMARKS), default=["full"], metavar="V,V",
                   help="landmark variants: lite, full, heavy or all (default: full)")
    g.add_argument("--stages", type=_choices(STAGE_NAMES), default=list(STAGE_NAMES),
                   metavar="S,S", help="detector, pose2d, lifter or all (default: all)")
    g.add_argument("--repeats", type=_positive(int), default=30,
                   help="timed calls per cell (default 30)")
    g.add_argument("--warmup", type=_non_negative_int, default=5,
                   help="untimed warm-up calls per cell (default 5)")
    g.add_argument("--frame-size", type=_frame_size, default=(1280, 720), metavar="WxH",
                   help="frame size for the stage measurements (default 1280x720; 'native')")
    g.add_argument("--no-stages", action="store_true", help="skip the stage measurements")
    g = p.add_argument_group("end to end")
    g.add_argument("--people", type=_int_list, default=[1, 2, 4, 6], metavar="N,N",
                   help="people per frame (default 1,2,4,6)")
    g.add_argument("--seconds", type=_positive(float), default=8.0,
                   help="measured seconds per scenario (default 8)")
    g.add_argument("--warmup-s", type=float, default=2.0,
                   help="seconds run before measuring each scenario (default 2)")
    g.add_argument("--rounds", type=_positive(int), default=2,
                   help="split each scenario into this many chunks, run interleaved with the "
                        "other scenarios' (default 2; each chunk has its own warm-up)")
    g.add_argument("--feed-fps", type=_positive(float), default=30.0,
                   help="frames per second fed, and core ticks per second (default 30)")
    g.add_argument("--detector-hz", type=_positive(float), default=None,
                   help="detector runs per second (default: the config's, 10)")
    g.add_argument("--e2e-threads", type=_positive(int), default=None,
                   help="interpreter threads per model (default: the config's, 2)")
    g.add_argument("--e2e-precision", type=_choices(PRECISIONS), default=None, metavar="P,P",
                   help="precision(s) end to end (default: the config's, int8, if shipped)")
    g.add_argument("--e2e-landmark", choices=LANDMARKS, default="full",
                   help="landmark variant end to end (default full)")
    g.add_argument("--clip", type=Path, action="append", default=None,
                   help="video(s) of real people to compose frames from (repeatable; "
                        "default: the bundled Sports2D demo clip)")
    g.add_argument("--tile", type=_positive(int), default=320,
                   help="side of one person's tile, px (default 320)")
    g.add_argument("--small-people", type=_int_list, default=[6], metavar="N,N",
                   help="the small-people variant: these counts of people shrunk to --small-px "
                        "tiles, scattered over a --small-frame frame (default 6; 0: none)")
    g.add_argument("--small-px", type=_positive(int), default=90,
                   help="side of a small person's tile, px; the person is about 0.7 of it "
                        "(default 90: people about 63 px tall)")
    g.add_argument("--small-frame", type=_frame_size, default=(1280, 720), metavar="WxH",
                   help="frame size of the small-people variant (default 1280x720)")
    g.add_argument("--no-e2e", action="store_true", help="skip the end-to-end scenarios")
    g = p.add_argument_group("budgets (runs per second)")
    g.add_argument("--budget-detector", type=_positive(float), default=DEFAULT_BUDGETS["detector"])
    g.add_argument("--budget-pose2d", type=_positive(float), default=DEFAULT_BUDGETS["pose2d"],
                   help="per person")
    g.add_argument("--budget-lifter", type=_positive(float), default=DEFAULT_BUDGETS["lifter"],
                   help="per person")
    g = p.add_argument_group("output")
    g.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="write the result as JSON ('-': stdout, then no table)")
    g.add_argument("--markdown", type=Path, default=None, metavar="PATH",
                   help="write the report as Markdown ('-': stdout)")
    g.add_argument("--plot", type=Path, default=None, metavar="PNG",
                   help="write a plot of fps against people and per-stage latency")
    g.add_argument("--compare", type=Path, default=None, metavar="EARLIER.json",
                   help="print ratios against an earlier --json result")
    g.add_argument("--from-json", type=Path, default=None, metavar="RESULT.json",
                   help="measure nothing: render (and --compare) this earlier result")
    p.add_argument("--models-dir", type=Path, default=None,
                   help="models folder (default: $EDGE_POSE_MODELS or the shipped models)")
    p.add_argument("--lift", action="store_true",
                   help="also score every 3D source (world landmarks, each lifter) on the "
                   "Pose2Sim test views and the demo clip (edge/bench/lift.py); with "
                   "--no-stages --no-e2e, only that")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run of a few seconds: 1 thread, 5 repeats, 1-2 people, 2 s")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    return p


def _stage_image(clip: Path, size: tuple[int, int] | None) -> U8:
    """A frame of the clip with a person (frame 120 of the demo clip, else the middle one)."""
    cap = cv2.VideoCapture(str(clip))
    if not cap.isOpened():
        raise SourceError(f"video {clip}: cannot be opened (not a video, or corrupt)")
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        want = 120 if count > 120 else max(count // 2, 0)
        image = None
        for _ in range(want + 1):
            ok, img = cap.read()
            if not ok:
                break
            image = img
    finally:
        cap.release()
    if image is None:
        raise SourceError(f"video {clip}: no frame could be read")
    if size is not None:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def find_person_clips(manifest: Manifest, clips: Sequence[Path], tile: int,
                      max_frames: int | None) -> list[PersonClip]:
    """Person clips (see :func:`extract_person_clips`) from every clip, with the detector.

    Raises:
        ModelError: When the manifest has no detector.
        SourceError: When a clip cannot be read or nobody can be followed in any.
    """
    dets = sorted((e for e in manifest.models.values() if e.role == "detector"),
                  key=lambda e: (e.precision != "float", e.key))
    if not dets:
        raise ModelError(f"no detector in {manifest.folder}: cannot find people in the clips")
    detector = PoseDetector(load_model(dets[0].key, os.cpu_count() or 1, manifest))

    def find(image: U8) -> Any:
        d = detector(image)
        return d.regions[0] if len(d) else None

    out: list[PersonClip] = []
    for c in clips:
        out += extract_person_clips(c, find, tile=tile, max_frames=max_frames)
    if not out:
        raise SourceError(f"no person could be followed in {', '.join(map(str, clips))}")
    return out


class _Progress:
    """Progress lines on stderr, stamped with the seconds since the start."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f} s] {msg}", file=sys.stderr, flush=True)


def measure_all(args: argparse.Namespace, manifest: Manifest) -> dict[str, Any]:
    """Runs every requested measurement and returns the result object (bench schema)."""
    t0 = time.perf_counter()
    say = _Progress()
    budgets = {"detector": args.budget_detector, "pose2d": args.budget_pose2d,
               "lifter": args.budget_lifter}
    cores = os.cpu_count() or 1
    threads = args.threads or list(range(1, cores + 1))
    clips = args.clip or [DEMO_CLIP]
    load_start = load_average()
    notes: list[str] = []
    have_prec = {e.precision for e in manifest.models.values()}
    missing = [p for p in args.precision if p not in have_prec]
    if missing:
        notes.append(f"precision {', '.join(missing)} not in the manifest: not measured")
    result: dict[str, Any] = {
        "schema": report.SCHEMA_ID,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": host_info(manifest),
        "settings": {"threads": threads, "precision": args.precision,
                     "landmark": args.landmark, "repeats": args.repeats,
                     "warmup": args.warmup, "frame_size": args.frame_size,
                     "people": args.people, "seconds": args.seconds, "warmup_s": args.warmup_s,
                     "feed_fps": args.feed_fps, "rounds": args.rounds,
                     "clips": [str(c) for c in clips], "tile": args.tile, "argv": sys.argv[1:]},
        "budgets_fps": budgets,
        "models": models_info(manifest),
        "stages": [],
        "stages_load": {"start": None, "end": None},
        "e2e": [],
        "notes": notes,
    }
    if not args.no_stages:
        image = _stage_image(clips[0], args.frame_size)
        cells, more = build_cells(manifest, image, threads=threads, precisions=args.precision,
                                  landmarks=args.landmark, stages=args.stages)
        notes += more
        say(f"stages: {len(cells)} cells x ({args.warmup} warm-up + {args.repeats} timed)")
        result["stages_load"]["start"] = load_average()
        measure(cells, repeats=args.repeats, warmup=args.warmup)
        end = load_average()
        result["stages_load"]["end"] = end
        result["stages"] = [cell_result(c, budgets.get(c.stage), args.warmup, end)
                            for c in cells]
        del cells  # frees their interpreters before the end-to-end RSS is sampled
        gc.collect()
    if not args.no_e2e:
        say(f"finding people in {', '.join(c.name for c in clips)}")
        pclips = find_person_clips(manifest, clips, args.tile, None)
        tiles_mb = sum(c.tiles.nbytes for c in pclips) / 2**20
        notes.append(f"end to end: {len(pclips)} person clip(s) of "
                     f"{', '.join(str(len(c)) for c in pclips)} frames, {tiles_mb:.0f} MB held "
                     "in memory by the benchmark itself (included in the RSS figures)")
        defaults = Config()
        want = defaults.models.precision
        precisions = args.e2e_precision or [
            want if any(e.role == "landmark" and e.variant == args.e2e_landmark
                        and e.precision == want for e in manifest.models.values())
            else "float"]
        e2e_threads = args.e2e_threads or defaults.models.threads
        detector_hz = args.detector_hz or defaults.scheduler.detector_hz
        scenarios = []
        for prec in precisions:
            if not any(e.role == "landmark" and e.variant == args.e2e_landmark
                       and e.precision == prec for e in manifest.models.values()):
                notes.append(f"end to end: no landmark {args.e2e_landmark}/{prec}: skipped")
                continue
            s = E2ESettings(landmark=args.e2e_landmark, precision=prec, threads=e2e_threads,
                            feed_fps=args.feed_fps, detector_hz=detector_hz,
                            seconds=args.seconds, warmup_s=max(args.warmup_s, 0.0),
                            budgets=budgets)
            scenarios += [(ComposedFrames(pclips, n), s) for n in args.people]
            small_frame = args.small_frame or (1280, 720)
            scenarios += [(ComposedFrames(pclips, n, canvas=small_frame, tile_px=args.small_px), s)
                          for n in args.small_people if n > 0]
        result["e2e"] = run_interleaved(scenarios, manifest, args.rounds, say)
        seen = [e for e in result["e2e"] if e["people_seen"]["mean"] < 0.9 * e["people"]]
        if seen:
            notes.append("fewer people annotated than shown at "
                         + ", ".join(str(e["people"]) for e in seen)
                         + " people: people too small for the detector's views of the frame "
                         "(whole frame and 416 px tiles), or crowded, are missed; see `seen`")
    result["load_start"] = load_start
    result["load_end"] = load_average()
    result["temp_c"] = read_cpu_temp_c()
    result["throttled"] = read_throttled_word()
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["duration_s"] = round(time.perf_counter() - t0, 1)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edge-bench``; returns the exit code (2: bad arguments or inputs)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.quick:
        args.threads = args.threads or [1]
        args.repeats, args.warmup = min(args.repeats, 5), min(args.warmup, 2)
        args.people = [p for p in args.people if p <= 2] or [1]
        args.seconds, args.warmup_s = min(args.seconds, 2.0), min(args.warmup_s, 1.0)
        args.rounds = 1
    if args.warmup_s < 0:
        parser.error("--warmup-s must be >= 0")
    if args.no_stages and args.no_e2e and args.from_json is None:
        if args.lift:
            return _lift_only(args)
        parser.error("--no-stages and --no-e2e together leave nothing to measure")
    cores = os.cpu_count() or 1
    if args.threads and max(args.threads) > 4 * cores:
        parser.error(f"--threads {max(args.threads)} is more than 4x the {cores} cores")
    for c in args.clip or []:
        if not c.is_file():
            parser.error(f"--clip {c}: no such file")
    try:
        earlier = report.load_result(args.compare) if args.compare else None
        if args.from_json is not None:
            result = report.load_result(args.from_json)
        else:
            manifest = load_manifest(args.models_dir)
            result = measure_all(args, manifest)
            report.validate(result, "this run")
    except report.ResultError as e:
        print(f"edge-bench: {e}", file=sys.stderr)
        return 2
    except (ModelError, SourceError) as e:
        print(f"edge-bench: {e}", file=sys.stderr)
        return 1
    to_stdout = args.json is not None and str(args.json) == "-"
    if args.json is not None:
        text = json.dumps(result, indent=1) + "\n"
        if to_stdout:
            sys.stdout.write(text)
        else:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text, encoding="utf-8")
    if args.markdown is not None:
        md = report.format_markdown(result)
        if str(args.markdown) == "-":
            (sys.stderr if to_stdout else sys.stdout).write(md)
        else:
            args.markdown.parent.mkdir(parents=True, exist_ok=True)
            args.markdown.write_text(md, encoding="utf-8")
    if args.plot is not None:
        report.plot(result, args.plot)
    out = sys.stderr if to_stdout else sys.stdout
    if args.from_json is None or earlier is None:
        print(report.format_table(result), file=out)
    if earlier is not None:
        print(report.compare(result, earlier), file=out)
    if args.lift:
        return _lift_only(args)
    return 0


def _lift_only(args: argparse.Namespace) -> int:
    """The 3D sources section (``--lift``): console table, Markdown appended, JSON beside."""
    from edge.bench import lift

    try:
        res = lift.run(load_manifest(args.models_dir))
    except ImportError as e:
        print(f"edge-bench: --lift needs the edge-pose repository checkout (lifter/, models/): "
              f"{e}", file=sys.stderr)
        return 1
    except (ModelError, SourceError, FileNotFoundError, RuntimeError) as e:
        print(f"edge-bench: {e}", file=sys.stderr)
        return 1
    print("\n3D sources (Pose2Sim test views; demo clip):\n" + lift.format_table(res))
    if args.markdown is not None and str(args.markdown) != "-":
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        with args.markdown.open("a", encoding="utf-8") as f:
            f.write("\n" + lift.format_markdown(res))
    if args.json is not None and str(args.json) != "-":
        path = args.json.with_name(args.json.stem + ".lift.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    return 0
