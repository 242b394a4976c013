"""Temporal and camera-aware lifter variants compared on Demo_MultiPerson's validation frames.

Never on Demo_SinglePerson (the test set). Each variant is a short training run (the settings of
:mod:`lifter.ablation`); run them as separate processes so they can share the cores::

    .venv/bin/python -m lifter.ablation_temporal --variant tcn_k27 --out /tmp/tcn_k27.json
    .venv/bin/python -m lifter.ablation_temporal --merge /tmp/*.json

``--merge`` writes ``lifter/ablation_temporal.json``: per variant, PA-MPJPE and MPJPE (mm, mean
of the four views), acceleration error (mm/frame^2 at 60 fps) and elbow/knee angle jitter
(deg/frame, median) on the validation frames, plain and mirror-symmetrised (as at run time).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from edge.bench.lift import angle_jitter
from lifter import multiperson
from lifter.ablation import mirror_features
from lifter.camera import N_CAMERA
from lifter.metrics import accel_error
from lifter.multiperson import VAL_FROM_FRAME, MultiViewSet
from lifter.train import (
    MultiVal,
    TrainConfig,
    load_pools,
    mirror_3d,
    multi_scores,
    multi_val,
    predict,
    train,
)

ROOT = Path(__file__).resolve().parent.parent

#: The shipped lifters' data mix (lifter.build), so only the architecture / input changes.
_BASE: dict[str, Any] = {"multi": 0.30, "mix": (0.45, 0.55, 0.0)}
VARIANTS: dict[str, dict[str, Any]] = {
    "mlp_k1": {**_BASE, "frames": 1},
    "mlp_k5": {**_BASE, "frames": 5},
    "tcn_k9": {**_BASE, "frames": 9, "arch": "tcn"},
    "tcn_k27": {**_BASE, "frames": 27, "arch": "tcn"},
    "mlp_k1_camera": {**_BASE, "frames": 1, "camera": True},
}


def mirror_inputs(x: npt.NDArray[Any], frames: int, camera: bool) -> npt.NDArray[Any]:
    """Mirrored network inputs (n, K*51 [+3]): the camera's x offset changes sign too."""
    if not camera:
        return mirror_features(x, frames)
    cam = x[:, -N_CAMERA:].copy()
    cam[:, 0] *= -1
    return np.concatenate([mirror_features(x[:, :-N_CAMERA], frames), cam], axis=1)


def val_order(ms: MultiViewSet) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp],
                                         npt.NDArray[np.intp]]:
    """Sorts the validation rows of :func:`lifter.train.multi_val` into tracks in time order.

    Returns:
        Order (indices into the validation rows), track id and frame of each sorted row; a
        track is one person in one view.
    """
    sel = np.flatnonzero((ms.frame >= VAL_FROM_FRAME) & ms.gt_ok.all(1))
    track = ms.view[sel] * 2 + ms.person[sel]
    order = np.lexsort((ms.frame[sel], track))
    return order, track[order], ms.frame[sel][order]


def temporal_scores(pred: npt.NDArray[Any], mv: MultiVal, ms: MultiViewSet) -> dict[str, float]:
    """PA-MPJPE, MPJPE, acceleration error and angle jitter of validation predictions.

    Args:
        pred: (n, 17, 3) metres, one per validation row.
        mv: The validation rows.
        ms: The Demo_MultiPerson set they come from.
    """
    order, track, frame = val_order(ms)
    # a new sequence wherever the track changes or a frame is missing
    brk = np.r_[True, (track[1:] != track[:-1]) | (frame[1:] != frame[:-1] + 1)]
    seq = np.cumsum(brk)
    p, g = pred[order], mv[1][order]
    return {**multi_scores(pred, mv),
            "accel_mm": round(accel_error(p, g, seq), 2),
            "jitter_deg_per_frame": round(angle_jitter(p, track, frame), 2),
            "gt_jitter_deg_per_frame": round(angle_jitter(g, track, frame), 2)}


def run(name: str, epochs: int, per_epoch: int, seed: int = 0) -> dict[str, Any]:
    """Trains one variant and scores it on the validation frames."""
    cache = ROOT / "cache"
    ms = multiperson.load_or_build(cache)
    pools = load_pools(cache / "dl", None, ms)
    cfg = replace(TrainConfig(epochs=epochs, per_epoch=per_epoch, seed=seed), **VARIANTS[name])
    mv = multi_val(ms, cfg.frames, cfg.camera)
    t0 = time.monotonic()
    net, log = train(cfg, pools, None, mv)
    out = {"config": asdict(cfg), "train_s": round(time.monotonic() - t0),
           "params": sum(int(t.numel()) for t in net.parameters()),
           "epochs": log["epochs"]}
    sets = {"": mv}
    if cfg.camera:
        sets["focal_guess_"] = multi_val(ms, cfg.frames, True, focal_guess=True)
    for prefix, m in sets.items():
        p = predict(net, m[0]).astype(np.float64)
        pm = mirror_3d(predict(net, mirror_inputs(m[0], cfg.frames, cfg.camera)
                               ).astype(np.float64))
        out[prefix + "plain"] = temporal_scores(p, m, ms)
        out[prefix + "symmetrised"] = temporal_scores(0.5 * (p + pm), m, ms)
    return out


def main() -> None:
    """Command line: one variant to a JSON file, or merge several into the record."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=sorted(VARIANTS))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--per-epoch", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0, help="recorded as <variant>_seed<N> if not 0")
    ap.add_argument("--merge", type=Path, nargs="*")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    record = ROOT / "lifter" / "ablation_temporal.json"
    if args.merge:
        old = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
        for p in args.merge:
            old.update(json.loads(p.read_text(encoding="utf-8")))
        record.write_text(json.dumps(old, indent=1) + "\n", encoding="utf-8")
        return
    if args.variant is None or args.out is None:
        ap.error("--variant and --out, or --merge")
    res = run(args.variant, args.epochs, args.per_epoch, args.seed)
    key = args.variant + (f"_seed{args.seed}" if args.seed else "")
    logging.info("%s %s %s", key, res["plain"], res["symmetrised"])
    args.out.write_text(json.dumps({key: res}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
