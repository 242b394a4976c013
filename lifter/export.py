"""TFLite export (float and int8), the manifest fragment, and speed measurement."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from ai_edge_quantizer import quantizer, recipe

from edge.lift3d import N_FEATURES, N_JOINTS, Lifter, normalise_2d
from edge.runtime import Manifest, load_manifest, sha256_file
from lifter.model import LifterNet, TemporalConvNet, fold
from lifter.tflite_writer import write_tflite
from models.quantize import static_int8_recipe

F32 = npt.NDArray[np.float32]

INPUT_NAME = "joints_2d"
OUTPUT_NAME = "joints_3d"
SIGNATURE_KEY = "serving_default"

SCHEME_INT8 = ("dynamic-range int8 (ai-edge-quantizer 0.10.0 recipe dynamic_wi8_afp32): int8 "
               "per-channel symmetric weights, activations quantized to int8 per row at run "
               "time, int8 x int8 matrix products (XNNPACK), float32 bias, model input and "
               "output; chosen over static int8, which lost 18-26 mm MPJPE on the held-out "
               "clips (see models/README.md, section 3D lifter)")


def export_float(net: LifterNet | TemporalConvNet) -> bytes:
    """The trained network as a float32 .tflite (batch norm folded)."""
    return write_tflite(fold(net), INPUT_NAME, OUTPUT_NAME)


def quantize_int8(float_model: bytes) -> bytes:
    """Dynamic-range int8 quantization (int8 weights and products; float32 I/O).

    Per-row run-time activation ranges keep the float model's accuracy, and batched results
    equal single ones. Static int8 (:func:`quantize_static_int8`) was measured and rejected.

    Args:
        float_model: The float .tflite bytes.

    Returns:
        The int8 .tflite bytes.
    """
    q = quantizer.Quantizer(float_model, recipe.dynamic_wi8_afp32())
    return bytes(q.quantize().quantized_model)


def quantize_static_int8(float_model: bytes, calibration: F32) -> bytes:
    """Static int8 quantization with float32 input and output (for comparison only).

    Args:
        float_model: The float .tflite bytes.
        calibration: (n, width) float32 network inputs drawn like the training data.

    Returns:
        The int8 .tflite bytes.
    """
    q = quantizer.Quantizer(float_model, static_int8_recipe())
    data = [{INPUT_NAME: np.ascontiguousarray(x[None])} for x in calibration]
    cal = q.calibrate({SIGNATURE_KEY: data})
    out: bytes = q.quantize(cal).quantized_model
    return bytes(out)


def manifest_entry(path: Path, variant: str, precision: str, frames: int, scheme: str,
                   extra: dict[str, Any]) -> dict[str, Any]:
    """A manifest entry (format of ``models/manifest.json``) for one lifter file."""
    width = frames * N_JOINTS * N_FEATURES
    what = ("the last {k} frames, oldest first, " if frames > 1 else "").format(k=frames)
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "role": "lifter",
        "variant": variant,
        "precision": precision,
        "scheme": scheme,
        "inputs": [{
            "key": "joints_2d", "name": INPUT_NAME, "shape": [1, width], "dtype": "float32",
            "meaning": (f"{what}17 COCO joints x (x, y, valid): 2D pixels minus the mid-hip "
                        "point, divided by the RMS distance of the valid joints from it "
                        "(edge.lift3d.normalise_2d); missing joints 0, 0, 0; batch resizable"),
        }],
        "outputs": [{
            "key": "joints_3d", "name": OUTPUT_NAME, "shape": [1, N_JOINTS * 3],
            "dtype": "float32",
            "meaning": ("17 COCO joints x (x, y, z) metres, origin at the mid-hip point, x right "
                        "in the image, y down, z away from the camera (look-at frame)"),
        }],
        **extra,
    }


def write_manifest(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Writes the lifter manifest fragment (same schema as ``models/manifest.json``)."""
    path.write_text(json.dumps({"schema": 1, "models": entries}, indent=2) + "\n",
                    encoding="utf-8")


@contextmanager
def fragment_manifest(fragment: Path, models_dir: Path) -> Iterator[Manifest]:
    """The fragment loaded as a manifest whose files are in ``models_dir`` (for evaluation)."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        shutil.copy(fragment, t / "manifest.json")
        for e in json.loads(fragment.read_text(encoding="utf-8"))["models"].values():
            (t / e["file"]).symlink_to((models_dir / e["file"]).resolve())
        yield load_manifest(t)


def lifts_per_second(lifter: Lifter, batch: int, seconds: float = 2.0,
                     seed: int = 0) -> float:
    """Lifts per second (2D normalisation + network) at a given batch size.

    A temporal lifter is fed the current frame's features repeated K times (its cost per call
    is the same as :class:`edge.lift3d.TemporalLifter`'s, less the history bookkeeping).

    Args:
        lifter: The lifter (its interpreter's thread count applies).
        batch: People per call.
        seconds: Time to measure for (after a warm-up).
        seed: Seed of the random 2D input.

    Returns:
        People lifted per second (median over 5 rounds).
    """
    rng = np.random.default_rng(seed)
    kp = rng.uniform(0, 1000, (batch, 17, 2)).astype(np.float32)
    conf = rng.uniform(0.4, 1, (batch, 17)).astype(np.float32)

    def once() -> None:
        feats = normalise_2d(kp, conf)
        lifter.run_features(np.tile(feats, (1, lifter.frames)))

    for _ in range(20):
        once()
    rates = []
    for _ in range(5):
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds / 5:
            once()
            n += 1
        rates.append(n * batch / (time.perf_counter() - t0))
    return float(np.median(rates))
