"""Core fps with and without the annotated video, passes interleaved.

Every pass is a fresh :class:`edge.app.Runtime` over the demo clip in every-frame mode (the
video writer lossless behind its shared-memory ring, in its own process, as ``edge-pose demo``
runs it), at ``--threads`` interpreter threads; the passes cycle through the variants (no
video, ``mp4v``, ``mjpeg``, each optionally with the writer process ``:NICE`` steps nicer)
``--rounds`` times, so that the load of other processes drifts over all of them alike. Reports
per pass the core fps (frames over the loop's wall time), the time to drain the writer after the
loop, the CPU seconds of the main process and of the writer process (``getrusage`` of the
reaped children), the core thread's CPU time inside the video output's ``write`` per frame, the
writer process's CPU per stage (``writer_profile``: its start and finish in s; reading, drawing,
encoding and the disk check in ms a frame; :data:`edge.sinks.video_process.PROFILE_STAGES`), the
load average, and per variant the median ratio to the no-video pass of
the same round. Usage::

    .venv/bin/python bench/writer_cost.py --rounds 3 --json bench/results/writer_cost.json
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.app import Runtime
from edge.bench.host import host_info, load_average
from edge.config import Config
from edge.runtime import load_manifest
from edge.sinks.video import VideoSink, choose_codec
from edge.sinks.video_process import VideoProcessSink


def one_pass(threads: int, video: str | None, nice: int, out: Path) -> dict[str, Any]:
    """One run of the clip.

    ``video``: None, ``auto``, ``mp4v`` or ``mjpeg`` (the writer process; ``auto`` is
    ``mjpeg`` in these every-frame runs), or ``mp4v@thread`` / ``mjpeg@thread`` (the former
    writer thread, for comparison).
    """
    codec, _, how = (video or "mp4v").partition("@")
    config = Config.model_validate({
        "source": {"uri": "demo"}, "models": {"threads": threads},
        "scheduler": {"mode": "every-frame"},
        "output": {"dir": str(out), "video": video is not None and how != "thread",
                   "video_codec": codec}})
    rt = Runtime(config)
    rt.output_nice = nice or None
    rt.open()
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rt.add_file_outputs(out)
    if how == "thread":  # VideoSink behind a lossless QueuedSink, on a thread of this process
        fps = rt.source.fps if rt.source is not None and rt.source.fps else 30.0
        rt.add_output(VideoSink(out / "annotated.mp4", fps,
                                choose_codec(codec, realtime=False)), name="VideoSink")
    # CPU time of the core thread inside the video output's write (the copy into the ring and
    # the message; for the thread variant, the enqueueing).
    write_cpu = [0.0]
    writers = [o for o in rt.outputs if isinstance(o, VideoProcessSink)]
    for o in rt.outputs:
        if getattr(o, "name", None) == "VideoSink":
            inner = o.write

            def timed(frame: Any, annotation: Any, inner: Any = inner) -> None:
                t = time.thread_time()
                inner(frame, annotation)
                write_cpu[0] += time.thread_time() - t

            setattr(o, "write", timed)  # noqa: B010 - an instance attribute over the method
    c0 = time.process_time()
    rt.run()
    t0 = time.perf_counter()
    rt.close()
    drain = time.perf_counter() - t0
    cpu = time.process_time() - c0
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = (ch1.ru_utime + ch1.ru_stime) - (ch0.ru_utime + ch0.ru_stime)
    s = rt.stats
    frames = max(1, s.frames_processed)
    profile = writers[0].profile if writers and writers[0].profile else {}
    return {"video": video or "none", "nice": nice,
            "core_fps": round(s.frames_processed / s.wall_s, 2),
            "loop_s": round(s.wall_s, 2), "drain_s": round(drain, 2), "cpu_s": round(cpu, 2),
            "writer_cpu_s": round(child, 2),
            "write_ms_per_frame": round(1000 * write_cpu[0] / frames, 3),
            # The writer process's CPU per stage: start and finish in s, the rest ms a frame.
            "writer_profile": {k: round(v, 3) if k in ("start", "finish")
                               else round(1000 * v / frames, 3) for k, v in profile.items()},
            "load": load_average()}


def main() -> int:
    """Runs the passes and prints (and optionally writes) the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", default="none,mp4v,mjpeg",
                   help="comma-separated: none, auto, mp4v, mjpeg, mp4v@thread, mjpeg@thread, "
                   "optionally :NICE (mp4v:19; "
                   "0 or none: the Runtime's default)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    variants = []
    for v in args.variants.split(","):
        name, _, nice = v.partition(":")
        variants.append((None if name == "none" else name, int(nice or 0)))
    passes: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.rounds):
            for video, nice in variants:
                res = {"round": r, **one_pass(args.threads, video, nice, Path(d))}
                print(json.dumps(res), flush=True)
                passes.append(res)
    base = {p["round"]: p["core_fps"] for p in passes if p["video"] == "none"}
    summary = {}
    for video, nice in variants:
        key = f"{video or 'none'}:{nice}"
        mine = [p for p in passes if p["video"] == (video or "none") and p["nice"] == nice]
        ratios = [p["core_fps"] / base[p["round"]] for p in mine if p["round"] in base]
        summary[key] = {"core_fps": [p["core_fps"] for p in mine],
                        "ratio_to_no_video_median": round(float(np.median(ratios)), 3)
                        if ratios else None,
                        "drain_s": [p["drain_s"] for p in mine],
                        "cpu_s_median": round(float(np.median([p["cpu_s"] for p in mine])), 2),
                        "writer_cpu_s_median": round(float(np.median(
                            [p["writer_cpu_s"] for p in mine])), 2),
                        "write_ms_per_frame_median": round(float(np.median(
                            [p["write_ms_per_frame"] for p in mine])), 3),
                        "writer_profile_median": {
                            k: round(float(np.median([p["writer_profile"][k] for p in mine])), 3)
                            for k in (mine[0]["writer_profile"] if mine else {})}}
    out = {"host": host_info(load_manifest()), "threads": args.threads, "passes": passes,
           "summary": summary}
    print(json.dumps(summary, indent=1))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
