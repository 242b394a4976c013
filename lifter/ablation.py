"""Short training runs that compare training choices on Demo_MultiPerson's validation frames.

Never on Demo_SinglePerson (the test set). Usage::

    .venv/bin/python -m lifter.ablation [--epochs 3 --per-epoch 100000]

Prints and writes ``lifter/ablation.json``: per variant, PA-MPJPE and MPJPE (mm) on the
validation frames with the plain network and with the mirror-symmetrised one.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.lift3d import COCO17_FLIP, N_FEATURES, N_JOINTS
from lifter import multiperson, real
from lifter.train import (
    TrainConfig,
    load_pools,
    mirror_3d,
    multi_scores,
    multi_val,
    predict,
    train,
)

ROOT = Path(__file__).resolve().parent.parent


def mirror_features(x: np.ndarray[Any, Any], frames: int) -> np.ndarray[Any, Any]:
    """Mirrors normalised inputs (n, K*51): x -> -x, sides swapped, per frame."""
    f = x.reshape(len(x), frames, N_JOINTS, N_FEATURES)[:, :, list(COCO17_FLIP)].copy()
    f[..., 0] *= -1
    return f.reshape(len(x), -1)


VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "multi15": {"multi": 0.15},
    "multi15_sym": {"multi": 0.15, "sym": 0.5},
    "multi30_noworld": {"multi": 0.30, "mix": (0.45, 0.55, 0.0)},
    "multi30": {"multi": 0.30},
    "multi50_noworld": {"multi": 0.50, "mix": (0.45, 0.55, 0.0)},
    "multi30_noworld_noise05": {"multi": 0.30, "mix": (0.45, 0.55, 0.0), "noise": 0.5},
}


def main() -> None:
    """Runs every variant."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--per-epoch", type=int, default=100_000)
    ap.add_argument("--frames", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    cache = ROOT / "cache"
    real_train = real.RealSet.load(cache / "lifter" / "real_train.npz") if (
        cache / "lifter" / "real_train.npz").is_file() else real.extract(real.TRAIN_VIDEOS)
    real_train.save(cache / "lifter" / "real_train.npz")
    ms = multiperson.load_or_build(cache)
    pools = load_pools(cache / "dl", real_train, ms)
    mv = multi_val(ms, args.frames)
    out = {}
    for name in args.variants.split(","):
        cfg = replace(TrainConfig(frames=args.frames, epochs=args.epochs,
                                  per_epoch=args.per_epoch), **VARIANTS[name])
        net, _ = train(cfg, pools, None, mv)
        p = predict(net, mv[0])
        pm = mirror_3d(predict(net, mirror_features(mv[0], args.frames)).astype(np.float64))
        out[name] = {"config": asdict(cfg), "plain": multi_scores(p, mv),
                     "symmetrised": multi_scores(0.5 * (p + pm), mv)}
        logging.info("%s %s", name, out[name])
    path = ROOT / "lifter" / f"ablation_k{args.frames}.json"
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    path.write_text(json.dumps({**old, **out}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
