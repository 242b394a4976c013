"""edge-pose against MediaPipe's own Python Pose: same clip, same machine, one run each.

MediaPipe (``mediapipe==0.10.21``, whose wheel ships the same ``pose_landmark_full.tflite`` as
edge-pose's ``landmark_full_float``) runs in its own virtual environment (it pins numpy<2);
``--setup`` creates it from PyPI. The clip is decoded once (edge-pose's OpenCV) into a .npy that
both sides read - two OpenCV builds decode the same H.264 file to different pixels - and the
frames' md5 sums are compared, so a decoder difference cannot pass for a model difference. Both run
frame by frame (no pacing) with landmark smoothing off, so the landmarks compared are the
models' own. edge-pose runs its pipeline as configured by default (detector every
``--detector-every`` frames, tracker, float full model) at each ``--threads``.

Reports: per-frame processing time and fps of both (decode excluded, first ``--skip`` frames
excluded), the fps ratio, and landmark agreement on frames where both found a person (edge's
person closest to MediaPipe's): 2D mean distance px and as a share of the person's height, and
world-landmark distance mm after re-rooting both at the mid-hip.

``--whole-process`` instead times two whole processes from start to exit, alternately,
``--repeat`` times each: ``edge-pose demo --threads N`` as a user runs it (default config: every
frame, multi-person tracking, lifter, ``annotations.jsonl`` and the annotated video; with
``--edge-config`` another one) and MediaPipe's worker decoding the clip itself (its own OpenCV)
and running Pose on every frame. Both include imports, model loading and decoding; the ratio
is MediaPipe's wall time over edge-pose's. ``--no-video`` runs edge-pose without its annotated
video (``[output] video = false``; MediaPipe's worker writes none either); ``--video-codec``
sets ``output.video_codec`` (default ``auto``: Motion JPEG in this every-frame run). Usage::

    .venv/bin/python bench/mediapipe_compare.py --setup            # once: /tmp/edge-mp-venv
    .venv/bin/python bench/mediapipe_compare.py --json bench/results/mediapipe.json
    .venv/bin/python bench/mediapipe_compare.py --whole-process --threads 2 --repeat 3
    .venv/bin/python bench/mediapipe_compare.py --whole-process --threads 2 --no-video
    .venv/bin/python bench/mediapipe_compare.py --whole-process --threads 2 --video-codec mp4v
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.bench.host import host_info, load_average
from edge.config import Config
from edge.pipeline import build_pipeline
from edge.runtime import load_manifest
from edge.skeleton import BLAZEPOSE_NAMES, BlazePose
from edge.sources.open import DEMO_CLIP
from edge.types import Frame

MEDIAPIPE = "mediapipe==0.10.21"
WORKER = Path(__file__).resolve().parent / "mediapipe_worker.py"


def setup_venv(venv: Path) -> Path:
    """Creates ``venv`` with MediaPipe from PyPI (idempotent); returns its python."""
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", MEDIAPIPE], check=True)
    return py


def decode_clip(clip: Path, out: Path, max_frames: int | None) -> tuple[Path, float]:
    """Decodes the clip into ``out`` (.npy, (n, H, W, 3) uint8 BGR); returns it and the fps."""
    cap = cv2.VideoCapture(str(clip))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {clip}")
    fps = float(cap.get(cv2.CAP_PROP_FPS)) or 30.0
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    n = n if max_frames is None else min(n, max_frames)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    arr = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(n, h, w, 3))
    got = 0
    for i in range(n):
        ok, bgr = cap.read()
        if not ok:
            break
        arr[i] = bgr
        got += 1
    cap.release()
    arr.flush()
    del arr
    if got < n:
        raise SystemExit(f"{clip}: only {got} of {n} frames decoded")
    return out, fps


def run_mediapipe(python: Path, frames: Path) -> dict[str, Any]:
    """Runs the worker in MediaPipe's venv; returns its JSON."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "mp.json"
        cmd = [str(python), str(WORKER), str(frames), str(out)]
        env = {**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
        subprocess.run(cmd, check=True, env=env, stderr=subprocess.DEVNULL)
        data: dict[str, Any] = json.loads(out.read_text())
        return data


def run_edge(frames_npy: Path, fps: float, threads: int,
             detector_every: int) -> list[dict[str, Any]]:
    """edge-pose over every frame; per frame: ms, md5, people (px, m).

    Tracks at most one person, as MediaPipe Pose does.
    """
    data: dict[str, Any] = Config().model_dump()
    data["models"].update(landmark="full", precision="float", detector_precision="float",
                          threads=threads)
    if "lifter" in data["models"]:
        data["models"]["lifter"] = "world"
    data["smoothing"]["enabled"] = False
    data["tracking"]["max_persons"] = 1
    config = Config.model_validate(data)
    pipeline = build_pipeline(config, timings=False, manifest=load_manifest(config.models.dir))
    video = np.load(frames_npy, mmap_mode="r")
    frames: list[dict[str, Any]] = []
    for i in range(len(video)):
        bgr = np.ascontiguousarray(video[i])
        h, w = bgr.shape[:2]
        md5 = hashlib.md5(bgr.tobytes()).hexdigest()
        frame = Frame(np.ascontiguousarray(bgr), i, round(i * 1e9 / fps), i / fps)
        t0 = time.perf_counter()
        detected = pipeline.detect(frame) if i % detector_every == 0 else None
        result = pipeline.core.step(frame, detected)
        ms = (time.perf_counter() - t0) * 1e3
        people = []
        for p in result.annotation.payload["persons"]:
            xy = [[q["x"] * w, q["y"] * h] if q else [np.nan, np.nan]
                  for q in (p["pose_2d"][n] for n in BLAZEPOSE_NAMES)]
            xyz = [[q["x"], q["y"], q["z"]] if q else [np.nan] * 3
                   for q in (p["pose_3d"].get(n) for n in BLAZEPOSE_NAMES)]
            people.append({"xy": xy, "xyz": xyz})
        frames.append({"ms": ms, "md5": md5, "people": people})
    return frames


def agreement(edge: list[dict[str, Any]], mp: list[dict[str, Any]],
              same_person: float = 0.1) -> dict[str, Any]:
    """Landmark agreement on the frames where both found someone.

    Frames whose mean 2D distance exceeds ``same_person`` x the person's height are counted
    as a different person (the two trackers chose different people, or one lost track) and
    left out of the statistics.
    """
    lh, rh = int(BlazePose.LEFT_HIP), int(BlazePose.RIGHT_HIP)
    px, rel, mm, vis_px = [], [], [], []
    offsets: list[np.ndarray[Any, np.dtype[np.float64]]] = []
    both = other = 0
    for e, m in zip(edge, mp, strict=False):
        if m["landmarks"] is None or not e["people"]:
            continue
        ref = np.asarray(m["landmarks"], np.float64)
        dists = [np.nanmean(np.linalg.norm(np.asarray(p["xy"]) - ref[:, :2], axis=1))
                 for p in e["people"]]
        k = int(np.nanargmin(dists))
        d = np.linalg.norm(np.asarray(e["people"][k]["xy"]) - ref[:, :2], axis=1)
        height = float(np.ptp(ref[:, 1])) or 1.0
        both += 1
        if float(np.nanmean(d)) > same_person * height:
            other += 1
            continue
        px.append(float(np.nanmean(d)))
        offsets.append(np.nanmean(np.asarray(e["people"][k]["xy"]) - ref[:, :2], axis=0))
        rel.append(float(np.nanmean(d)) / height)
        vis = ref[:, 2] > 0.5
        if vis.any():
            vis_px.append(float(np.nanmean(d[vis])))
        if m["world"] is not None:
            a = np.asarray(e["people"][k]["xyz"], np.float64)
            b = np.asarray(m["world"], np.float64)
            a = a - 0.5 * (a[lh] + a[rh])
            b = b - 0.5 * (b[lh] + b[rh])
            mm.append(1000.0 * float(np.nanmean(np.linalg.norm(a - b, axis=1))))

    def stats(v: list[float], nd: int = 2) -> dict[str, float] | None:
        if not v:
            return None
        a = np.asarray(v)
        return {"median": round(float(np.median(a)), nd), "mean": round(float(a.mean()), nd),
                "p90": round(float(np.percentile(a, 90)), nd)}
    return {"frames_both_found": both, "frames_other_person": other,
            "frames_compared": len(px), "px_2d": stats(px), "px_2d_visible": stats(vis_px),
            "share_of_height": stats(rel, 4), "mm_world": stats(mm, 1),
            # A systematic shift (edge minus MediaPipe, px, mean over frames and landmarks)
            # tells a bias in cropping apart from noise.
            "mean_offset_px": None if not offsets else
            [round(float(v), 2) for v in np.mean(offsets, axis=0)]}


def whole_process(python: Path, clip: Path, threads: int, repeat: int,
                  edge_config: Path | None) -> dict[str, Any]:
    """Times ``edge-pose demo`` and MediaPipe's worker as whole processes, alternately.

    Returns:
        Per side the wall times (s) of every run and their median, the CPU seconds (user +
        system, all threads: steadier than wall time on a loaded machine), edge-pose's core fps
        (its ``stats.json``), and ``ratio``: MediaPipe's median wall time over edge-pose's
        (``cpu_ratio`` the same for CPU seconds).
    """
    edge_s: list[float] = []
    core_fps: list[float] = []
    mp_s: list[float] = []
    edge_cpu: list[float] = []
    mp_cpu: list[float] = []

    def children_cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    frames = 0
    loads: list[float | None] = []
    env = {**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
    with tempfile.TemporaryDirectory() as d:
        for _ in range(repeat):
            load = load_average()
            loads.append(load[0] if load else None)
            out = Path(d) / "edge"
            cmd = [sys.executable, "-m", "edge.cli", "demo", "--threads", str(threads),
                   "--no-progress", "--out", str(out)]
            if clip != DEMO_CLIP:
                cmd[3:4] = ["run", "--every-frame", "--source", str(clip)]
            if edge_config is not None:
                cmd += ["--config", str(edge_config)]
            t0, c0 = time.perf_counter(), children_cpu()
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            edge_s.append(time.perf_counter() - t0)
            edge_cpu.append(children_cpu() - c0)
            stats = json.loads((out / "stats.json").read_text())
            core_fps.append(round(stats["frames_processed"] / stats["wall_s"], 2))
            frames = int(stats["frames_processed"])
            t0, c0 = time.perf_counter(), children_cpu()
            subprocess.run([str(python), str(WORKER), str(clip), str(Path(d) / "mp.json")],
                           check=True, env=env, stderr=subprocess.DEVNULL)
            mp_s.append(time.perf_counter() - t0)
            mp_cpu.append(children_cpu() - c0)
    e, m = float(np.median(edge_s)), float(np.median(mp_s))
    return {"threads": threads, "frames": frames, "edge_config": str(edge_config),
            "edge_wall_s": [round(x, 2) for x in edge_s], "edge_core_fps": core_fps,
            "mediapipe_wall_s": [round(x, 2) for x in mp_s],
            "edge_fps_whole": round(frames / e, 2), "mediapipe_fps_whole": round(frames / m, 2),
            "edge_cpu_s": [round(x, 2) for x in edge_cpu],
            "mediapipe_cpu_s": [round(x, 2) for x in mp_cpu],
            "load_1min_at_each_pair": loads,
            "ratio": round(m / e, 3),
            "cpu_ratio": round(float(np.median(mp_cpu)) / float(np.median(edge_cpu)), 3)}


def timing(ms: list[float], skip: int) -> dict[str, float]:
    """Median / p90 ms and fps (frames over summed time) after the first ``skip`` frames."""
    a = np.asarray(ms[skip:], np.float64)
    return {"frames": int(a.size), "ms_p50": round(float(np.median(a)), 2),
            "ms_p90": round(float(np.percentile(a, 90)), 2),
            "fps": round(1000.0 * a.size / float(a.sum()), 2)}


def main() -> int:
    """Runs both sides and prints (and optionally writes) the comparison."""
    p = argparse.ArgumentParser(description="edge-pose vs MediaPipe Pose on one clip")
    p.add_argument("--clip", type=Path, default=DEMO_CLIP)
    p.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "edge-mp-venv",
                   help="MediaPipe's virtual environment")
    p.add_argument("--setup", action="store_true", help=f"create --venv with {MEDIAPIPE}")
    p.add_argument("--threads", default="1,2", help="edge-pose interpreter threads to run")
    p.add_argument("--detector-every", type=int, default=6)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--skip", type=int, default=5, help="warm-up frames left out of timing")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--whole-process", action="store_true",
                   help="time whole processes (see the module docstring)")
    p.add_argument("--repeat", type=int, default=3, help="runs per side (--whole-process)")
    p.add_argument("--edge-config", type=Path, default=None,
                   help="TOML config for edge-pose (--whole-process)")
    p.add_argument("--no-video", action="store_true",
                   help="edge-pose without its annotated video (--whole-process)")
    p.add_argument("--video-codec", choices=("auto", "mp4v", "mjpeg"), default=None,
                   help="edge-pose's output.video_codec (--whole-process; default: the config's)")
    args = p.parse_args()
    output = ["video = false"] if args.no_video else []
    if args.video_codec is not None:
        output.append(f'video_codec = "{args.video_codec}"')
    if output and args.edge_config is not None:
        p.error("--no-video/--video-codec and --edge-config: put them in the config's [output]")
    no_video = tempfile.TemporaryDirectory() if output else None
    if no_video is not None:
        args.edge_config = Path(no_video.name) / "output.toml"
        args.edge_config.write_text("[output]\n" + "\n".join(output) + "\n", encoding="utf-8")
    python = setup_venv(args.venv) if args.setup else args.venv / "bin" / "python"
    if not python.exists():
        p.error(f"{python} does not exist: run with --setup first (or give --venv)")
    if not args.clip.is_file():
        p.error(f"--clip {args.clip}: no such file")
    load0 = load_average()
    if args.whole_process:
        whole: dict[str, Any] = {
            "clip": str(args.clip), "host": host_info(load_manifest()), "load_start": load0,
            "video": not args.no_video, "video_codec": args.video_codec or "config",
            "runs": [whole_process(python, args.clip, int(t), args.repeat, args.edge_config)
                     for t in args.threads.split(",")],
            "load_end": load_average()}
        if no_video is not None:
            no_video.cleanup()
        text = json.dumps(whole, indent=1)
        print(text)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text + "\n", encoding="utf-8")
        return 0
    tmp = tempfile.TemporaryDirectory()
    frames_npy, fps = decode_clip(args.clip, Path(tmp.name) / "frames.npy", args.max_frames)
    mp = run_mediapipe(python, frames_npy)
    mp_frames = mp["frames"]
    out: dict[str, Any] = {
        "clip": str(args.clip), "host": host_info(load_manifest()),
        "mediapipe": {"version": mp["mediapipe"], **timing([f["ms"] for f in mp_frames],
                                                           args.skip),
                      "frames_with_person": sum(f["landmarks"] is not None for f in mp_frames)},
        "edge": [], "load_start": load0}
    for t in (int(x) for x in args.threads.split(",")):
        edge = run_edge(frames_npy, fps, t, args.detector_every)
        same = sum(a["md5"] == b["md5"] for a, b in zip(edge, mp_frames, strict=False))
        tm = timing([f["ms"] for f in edge], args.skip)
        out["edge"].append({
            "threads": t, "detector_every": args.detector_every, **tm,
            "fps_ratio_vs_mediapipe": round(tm["fps"] / out["mediapipe"]["fps"], 3),
            "frames_with_person": sum(bool(f["people"]) for f in edge),
            "identical_decoded_frames": f"{same}/{min(len(edge), len(mp_frames))}",
            "agreement": agreement(edge, mp_frames), "load": load_average()})
    out["load_end"] = load_average()
    tmp.cleanup()
    text = json.dumps(out, indent=1)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
