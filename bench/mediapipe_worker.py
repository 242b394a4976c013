"""MediaPipe's own Python Pose on decoded frames, timed per frame (the reference side).

Runs in a separate virtual environment holding ``mediapipe==0.10.21`` (it pins numpy<2 and its
own OpenCV, so it cannot share edge-pose's); imports nothing from edge-pose. The frames come
decoded (a .npy) because two OpenCV builds decode one H.264 file differently. Called by
``bench/mediapipe_compare.py``; writes one JSON object::

    {"mediapipe": version, "frames": [{"ms": .., "md5": .., "landmarks": [[x, y, vis] * 33]
     | null, "world": [[x, y, z] * 33] | null}, ...]}

with landmarks in frame pixels and world landmarks in metres.

Given a video file instead of a .npy (``--whole-process`` of the comparison), it decodes the
video itself with MediaPipe's OpenCV, as a user's script would, and the whole process is timed
from outside.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import time
from pathlib import Path
from typing import Any


def main() -> int:
    """Processes the frames one by one in video mode (tracking), writes the JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("frames", type=Path, help="a .npy of (n, H, W, 3) uint8 BGR frames, or a "
                   "video file (decoded here)")
    p.add_argument("out", type=Path)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--smooth", action="store_true", help="MediaPipe's landmark smoothing on")
    args = p.parse_args()
    cv2: Any = importlib.import_module("cv2")
    np: Any = importlib.import_module("numpy")
    mp: Any = importlib.import_module("mediapipe")
    if args.frames.suffix == ".npy":
        video = np.load(args.frames, mmap_mode="r")
    else:  # decoded frame by frame inside the loop (whole-process timing)
        cap = cv2.VideoCapture(str(args.frames))

        def decoded() -> Any:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return
                yield bgr

        video = decoded()
    frames: list[dict[str, Any]] = []
    # model_complexity=1 is pose_landmark_full.tflite, the file edge-pose ships as landmark_full.
    with mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1,
                                smooth_landmarks=args.smooth, enable_segmentation=False) as pose:
        for i, raw in enumerate(video):
            if args.max_frames is not None and i >= args.max_frames:
                break
            bgr = np.ascontiguousarray(raw)
            h, w = bgr.shape[:2]
            md5 = hashlib.md5(bgr.tobytes()).hexdigest()
            t0 = time.perf_counter()
            res = pose.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            ms = (time.perf_counter() - t0) * 1e3
            lm = wl = None
            if res.pose_landmarks is not None:
                lm = [[p.x * w, p.y * h, p.visibility] for p in res.pose_landmarks.landmark]
            if res.pose_world_landmarks is not None:
                wl = [[p.x, p.y, p.z] for p in res.pose_world_landmarks.landmark]
            frames.append({"ms": ms, "md5": md5, "landmarks": lm, "world": wl})
    args.out.write_text(json.dumps({"mediapipe": mp.__version__, "frames": frames}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
