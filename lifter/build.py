"""The one command that builds the lifter: data, training, export, evaluation, manifest.

Usage (from the repository root, CPU only, about 25 minutes on one core)::

    .venv/bin/python -m lifter.build

Reads the pinned pybullet and pose2sim wheels in ``cache/dl`` (Demo_MultiPerson is triangulated
into ``cache/lifter/multiperson.npz``, :mod:`lifter.multiperson`); writes
``models/lifter_{single,temporal}_{float,int8}.tflite``, ``lifter/manifest_lifter.json`` and
``lifter/metrics.json``. Seeds are fixed and PyTorch runs on one thread, so the same inputs give
the same weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.lift3d import Lifter, normalise_2d
from edge.runtime import Model, ModelEntry, TensorSpec
from lifter import export, multiperson, pose2sim, real, skeleton3d
from lifter.metrics import accel_error, mpjpe, pa_mpjpe
from lifter.train import (
    EvalSet,
    MultiVal,
    Pools,
    TrainConfig,
    epoch_data,
    heldout_deepmimic,
    load_pools,
    multi_scores,
    multi_val,
    predict,
    scores,
    train,
)

logger = logging.getLogger("lifter.build")

ROOT = Path(__file__).resolve().parent.parent
#: 30 % of the samples from Demo_MultiPerson's triangulated training frames, the rest from
#: DeepMimic and synthetic poses; no world-landmark targets. Chosen by ``lifter.ablation`` on
#: Demo_MultiPerson's validation frames (lifter/ablation_k1.json), never on the test set.
SINGLE = TrainConfig(frames=1, epochs=16, per_epoch=200_000, multi=0.30, mix=(0.45, 0.55, 0.0))
#: Causal temporal convolutions over K = 9 frames (kernel 3, stride 3, two levels: 0.3 s at
#: 30 fps, 0.9 s at 10 fps; trained on 10-30 fps windows). Chosen over the K = 5 MLP and over
#: K = 27 by ``lifter.ablation_temporal`` on Demo_MultiPerson's validation frames
#: (lifter/ablation_temporal.json), never on the test set.
TEMPORAL = TrainConfig(frames=9, arch="tcn", channels=256, epochs=10, per_epoch=100_000,
                       multi=0.30, mix=(0.45, 0.55, 0.0))
CALIBRATION_SAMPLES = 2000


def _model_from_bytes(model: bytes, like: dict[str, Any]) -> Model:
    """A Model for unsaved .tflite bytes, with a manifest entry like ``like``."""
    tmp = Path(tempfile.mkdtemp())
    path = tmp / "model.tflite"
    path.write_bytes(model)
    entry = ModelEntry(key="lifter_static_int8", file=path.name, sha256="", role="lifter",
                       variant=like["variant"], precision="int8", scheme="static int8",
                       inputs=tuple(TensorSpec.from_json(t) for t in like["inputs"]),
                       outputs=tuple(TensorSpec.from_json(t) for t in like["outputs"]),
                       raw={})
    return Model(entry, path, 1)


def pose2sim_windows(ev: pose2sim.Pose2SimEval, frames: int, stride: int = 2
                     ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Causal windows of the held-out Pose2Sim views at 30 fps (every 2nd 60 fps frame).

    Returns:
        Network input (n, frames*51) and the indices into ``ev`` of the frames scored.
    """
    xs, idx = [], []
    for v in np.unique(ev.seq):
        ix = np.flatnonzero(ev.seq == v)[::stride]
        f = normalise_2d(ev.kp[ix], ev.conf[ix])
        w = np.clip(np.arange(len(ix))[:, None] - np.arange(frames - 1, -1, -1)[None, :], 0,
                    None)
        xs.append(f[w].reshape(len(ix), -1))
        idx.append(ix)
    return np.concatenate(xs), np.concatenate(idx)


def evaluate_model(lifter: Lifter, ev_noisy: EvalSet, ev_clean: EvalSet,
                   p2s: pose2sim.Pose2SimEval, mv: MultiVal) -> dict[str, Any]:
    """Scores a shipped (TFLite) lifter on every held-out set (symmetrised, as at run time).

    ``pose2sim_heldout`` is the test set: reported, never used for a choice.
    """
    out: dict[str, Any] = {
        "deepmimic_heldout_noisy": scores(lifter.run_features(ev_noisy.x), ev_noisy),
        "deepmimic_heldout_clean": scores(lifter.run_features(ev_clean.x), ev_clean),
        "multiperson_val": multi_scores(lifter.run_features(mv[0]), mv),
    }
    x, ix = pose2sim_windows(p2s, lifter.frames)
    pred = lifter.run_features(x)
    out["pose2sim_heldout"] = {
        "mpjpe_mm": round(mpjpe(pred, p2s.gt[ix]), 1),
        "pa_mpjpe_mm": round(pa_mpjpe(pred, p2s.gt[ix]), 1),
        "accel_mm": round(accel_error(pred, p2s.gt[ix], p2s.seq[ix]), 1)}
    return out


def build_variant(name: str, cfg: TrainConfig, pools: Pools, p2s: pose2sim.Pose2SimEval,
                  out_dir: Path, ms: multiperson.MultiViewSet,
                  backup: Path | None = None) -> dict[str, Any]:
    """Trains, exports (float + int8) and scores one lifter variant.

    Args:
        name: Variant name (``single`` or ``temporal``).
        cfg: Training configuration.
        pools: Training data.
        p2s: Held-out real people (the test set).
        out_dir: Where the .tflite files go.
        ms: Demo_MultiPerson rows (its validation frames are scored).
        backup: Folder that also receives copies of the files (None: no copies).

    Returns:
        Training log, scores and manifest entries.
    """
    ev_noisy = heldout_deepmimic(pools, cfg.frames, 1.0)
    ev_clean = heldout_deepmimic(pools, cfg.frames, 0.0)
    mv = multi_val(ms, cfg.frames)
    net, log = train(cfg, pools, ev_noisy, mv)
    torch_scores = scores(predict(net, ev_noisy.x), ev_noisy)
    float_bytes = export.export_float(net)
    cal_rng = np.random.default_rng(cfg.seed + 99)
    cal_x, _, _ = epoch_data(cal_rng, pools, replace(cfg, per_epoch=CALIBRATION_SAMPLES))
    int8_bytes = export.quantize_int8(float_bytes)
    static_bytes = export.quantize_static_int8(float_bytes, cal_x)
    files = {"float": out_dir / f"lifter_{name}_float.tflite",
             "int8": out_dir / f"lifter_{name}_int8.tflite"}
    files["float"].write_bytes(float_bytes)
    files["int8"].write_bytes(int8_bytes)
    result: dict[str, Any] = {"train_log": log, "torch_deepmimic_heldout_noisy": torch_scores,
                              "files": {k: str(v) for k, v in files.items()}}
    entries = {}
    for prec, path in files.items():
        scheme = ("float32, batch norm folded" if prec == "float"
                  else export.SCHEME_INT8.format(n=CALIBRATION_SAMPLES))
        entries[f"lifter_{name}_{prec}"] = export.manifest_entry(
            path, name, prec, cfg.frames, scheme, {})
    frag = out_dir / f".lifter_{name}_manifest.json"
    export.write_manifest(frag, entries)
    with export.fragment_manifest(frag, out_dir) as man:
        for prec in files:
            lf = Lifter.load(f"lifter_{name}_{prec}", 1, man)
            result[prec] = evaluate_model(lf, ev_noisy, ev_clean, p2s, mv)
            result[prec]["lifts_per_s_1thread"] = {
                f"batch{b}": round(export.lifts_per_second(lf, b)) for b in (1, 4, 16)}
    frag.unlink()
    # static int8 (whole graph, calibrated): measured for the record, not shipped
    static = Lifter(_model_from_bytes(static_bytes, entries[f"lifter_{name}_int8"]))
    result["int8_static_not_shipped"] = evaluate_model(static, ev_noisy, ev_clean, p2s, mv)
    result["int8_static_not_shipped"]["lifts_per_s_1thread"] = {
        f"batch{b}": round(export.lifts_per_second(static, b)) for b in (1, 4, 16)}
    if backup is not None:
        backup.mkdir(parents=True, exist_ok=True)
        for path in files.values():
            (backup / path.name).write_bytes(path.read_bytes())
    result["entries"] = entries
    return result


def main(argv: list[str] | None = None) -> None:
    """Builds every lifter variant and writes the manifest fragment and metrics."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "models")
    ap.add_argument("--cache", type=Path, default=ROOT / "cache")
    ap.add_argument("--meta-out", type=Path, default=ROOT / "lifter",
                    help="where manifest_lifter.json and metrics.json go")
    ap.add_argument("--variants", default="single,temporal")
    ap.add_argument("--epochs-scale", type=float, default=1.0,
                    help="multiply every variant's epochs (quick trials; 1 for the release)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    real.fetch_sources(args.cache)
    args.out.mkdir(parents=True, exist_ok=True)
    args.meta_out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    real_train = real.extract(real.TRAIN_VIDEOS)
    real_held = real.extract(real.HELDOUT_VIDEOS, max_people=1)
    p2s = pose2sim.build(real_held)
    ms = multiperson.load_or_build(args.cache)
    pools = load_pools(args.cache / "dl", real_train, ms)
    sizes = dict(pools.sizes)
    sizes["real_heldout_person_frames"] = len(real_held.kp)
    sizes["pose2sim_eval_frames_30fps"] = int(len(p2s.kp) // 2)
    world_scores = {}
    _, ix = pose2sim_windows(p2s, 1)
    world_scores = {"mpjpe_mm": round(mpjpe(p2s.world[ix], p2s.gt[ix]), 1),
                    "pa_mpjpe_mm": round(pa_mpjpe(p2s.world[ix], p2s.gt[ix]), 1),
                    "accel_mm": round(accel_error(p2s.world[ix], p2s.gt[ix], p2s.seq[ix]), 1)}
    metrics: dict[str, Any] = {
        "data": sizes, "multiperson_reproj_px": round(ms.reproj_px, 1),
        "heldout_clips": list(skeleton3d.HELD_OUT_CLIPS),
        "pose2sim_triangulation_reproj_px": round(p2s.reproj_px, 1),
        "world_landmarks_pose2sim_heldout": world_scores, "variants": {}}
    entries: dict[str, Any] = {}
    for name in args.variants.split(","):
        cfg = SINGLE if name == "single" else TEMPORAL
        cfg = replace(cfg, epochs=max(1, round(cfg.epochs * args.epochs_scale)))
        # copies outside models/, which other builds may clean
        backup = (args.cache / "lifter" / "models"
                  if args.out.resolve() == (ROOT / "models").resolve() else None)
        res = build_variant(name, cfg, pools, p2s, args.out, ms, backup)
        for key, e in res.pop("entries").items():
            prec = e["precision"]
            e["data"] = {"config": asdict(cfg), **sizes}
            e["epochs"] = cfg.epochs
            e["metrics"] = res[prec]
            entries[key] = e
        metrics["variants"][name] = res
        logger.info("%s: %s", name, json.dumps({k: res[k] for k in ("float", "int8")}))
    metrics["total_s"] = round(time.monotonic() - t0, 1)
    merge_meta(args.meta_out, entries, metrics)
    logger.info("done in %.0f s", metrics["total_s"])


def merge_meta(meta_dir: Path, entries: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Writes ``manifest_lifter.json`` and ``metrics.json``, keeping the variants not rebuilt.

    ``--variants temporal`` rebuilds one variant: the other variant's entries and metrics
    already in ``meta_dir`` stay, and each rebuilt variant records its own build time.

    Args:
        meta_dir: Folder of the two files.
        entries: Manifest entries of the variants just built.
        metrics: Metrics of this build (its ``variants`` are the ones just built).
    """
    frag, mpath = meta_dir / "manifest_lifter.json", meta_dir / "metrics.json"
    built = {e["variant"] for e in entries.values()}
    if frag.is_file():
        old = json.loads(frag.read_text(encoding="utf-8"))["models"]
        entries = {**{k: e for k, e in old.items() if e["variant"] not in built}, **entries}
    export.write_manifest(frag, entries)
    for res in metrics["variants"].values():
        res["build_s"] = metrics["total_s"]
    if mpath.is_file():
        old_m = json.loads(mpath.read_text(encoding="utf-8"))
        metrics["variants"] = {**{k: v for k, v in old_m["variants"].items()
                                  if k not in built}, **metrics["variants"]}
    mpath.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
