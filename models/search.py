"""Choosing how much of a model's int8 region can really be int8.

A scheme's region (:mod:`models.schemes`) is where int8 pays off in speed. Not all of it
survives int8 with the fidelity bars met, so the build shrinks it:

1. the region is cut into *units*, one inverted-residual block each (expansion 1x1 conv,
   depthwise conv, projection 1x1 conv, and the PAD/ADD around them), so that float and int8
   parts meet at few places (each meeting costs a QUANTIZE or DEQUANTIZE op);
2. the whole region is quantized once, and every tensor is compared with the float model on a
   few selection inputs (reference kernels, all tensors kept): a unit's *sensitivity* is how
   much the relative RMS error grows across it. One quantization ranks every unit, instead of
   one quantization per op;
3. units are taken least sensitive first; a binary search finds the largest number of units
   whose quantized model still passes the bars, with a margin, on the selection inputs.

Selection inputs come from the calibration frames but are not calibration inputs, and the
held-out inputs are never looked at here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from models import quantize
from models.quantize import OpInfo

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchResult:
    """Outcome of :func:`search`.

    Attributes:
        int8_ops: Indices of the ops quantized to int8.
        model: The chosen quantized model.
        units: The region's units (lists of op indices), least sensitive first.
        sensitivity: Relative RMS error growth of each unit (same order as ``units``).
        chosen_units: How many of ``units`` (from the front) are int8.
        trace: Each tried unit count with its selection verdict and metrics.
    """

    int8_ops: list[int]
    model: bytes
    units: list[list[int]]
    sensitivity: list[float]
    chosen_units: int
    trace: list[dict[str, Any]]


def split_units(ops: Sequence[OpInfo], first: int, last: int) -> list[list[int]]:
    """Cuts ops ``first..last`` into blocks starting at each expansion convolution.

    An expansion convolution is a CONV_2D not directly preceded by a DEPTHWISE_CONV_2D (the
    one that is, is the block's projection).
    """
    units: list[list[int]] = []
    for k in range(first, last + 1):
        starts = (ops[k].kind == "CONV_2D" and k > first
                  and ops[k - 1].kind != "DEPTHWISE_CONV_2D")
        if not units or starts:
            units.append([])
        units[-1].append(k)
    return units


def _reference(model: bytes) -> Any:
    it = Interpreter(model_content=model, num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                     experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    return it


def tensor_errors(float_model: bytes, quant_model: bytes, ops: Sequence[OpInfo],
                  inputs: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Relative RMS error of each op's first output in the quantized model.

    Args:
        float_model: The float32 model.
        quant_model: Its quantized version (same op output tensor names).
        ops: The float model's ops.
        inputs: (n, 1, H, W, 3) float32 inputs.

    Returns:
        (n_ops,) float64: mean over inputs of ||q - f|| / ||f|| (q dequantized); NaN where a
        tensor cannot be matched.
    """
    fi, qi = _reference(float_model), _reference(quant_model)
    fd = {str(t["name"]): t for t in fi.get_tensor_details()}
    qd = {str(t["name"]): t for t in qi.get_tensor_details()}
    err = np.zeros(len(ops))
    for x in inputs:
        fi.set_tensor(fi.get_input_details()[0]["index"], x)
        qi.set_tensor(qi.get_input_details()[0]["index"], x)
        fi.invoke()
        qi.invoke()
        for o in ops:
            name = o.scope.split(";")[0]
            if name not in fd or name not in qd:
                err[o.index] = np.nan
                continue
            f = fi.get_tensor(fd[name]["index"]).astype(np.float64)
            q = qi.get_tensor(qd[name]["index"]).astype(np.float64)
            scale, zero = qd[name]["quantization"]
            if scale:
                q = (q - zero) * scale
            err[o.index] += float(np.sqrt(np.mean((q - f) ** 2))
                                  / (np.sqrt(np.mean(f ** 2)) + 1e-12))
    return err / len(inputs)


def search(float_model: bytes, ops: Sequence[OpInfo], first: int, last: int,
           calibration: dict[str, Any], probe_inputs: np.ndarray[Any, Any],
           accept: Callable[[bytes], tuple[bool, dict[str, Any]]]) -> SearchResult:
    """Finds the largest set of least-sensitive units of ``first..last`` that passes ``accept``.

    Args:
        float_model: The float32 model.
        ops: Its ops.
        first: First op of the int8 region.
        last: Last op of the int8 region (inclusive).
        calibration: Calibration statistics (:func:`models.quantize.calibrate`).
        probe_inputs: A few (n, 1, H, W, 3) selection inputs for the sensitivity ranking.
        accept: Selection check of a quantized model: ``(passes, metrics)``.

    Returns:
        The chosen model and how it was chosen. With no passing count, zero units (an all-float
        model) is returned with ``chosen_units == 0``.
    """
    units = split_units(ops, first, last)
    region = [k for u in units for k in u]
    all_float = [o.index for o in ops if o.index not in set(region)]
    whole = quantize.quantize(float_model, ops, all_float, calibration)
    err = tensor_errors(float_model, whole, ops, probe_inputs)
    growth = []
    for u in units:
        before = err[u[0] - 1] if u[0] - 1 >= first else 0.0
        growth.append(float(np.nan_to_num(err[u[-1]] - before, nan=1.0)))
    order = np.argsort(np.asarray(growth), kind="stable")
    units = [units[i] for i in order]
    growth = [round(growth[i], 5) for i in order]

    cache: dict[int, tuple[bool, dict[str, Any], bytes]] = {}
    trace: list[dict[str, Any]] = []

    def trial(n: int) -> bool:
        if n not in cache:
            int8 = {k for u in units[:n] for k in u}
            model = quantize.quantize(float_model, ops,
                                      [o.index for o in ops if o.index not in int8],
                                      calibration)
            ok, metrics = accept(model)
            cache[n] = (ok, metrics, model)
            trace.append({"units": n, "int8_ops": len(int8), "passes": ok, **metrics})
            logger.info("  %d/%d units int8 (%d ops): %s %s", n, len(units), len(int8),
                        "pass" if ok else "fail", metrics)
        return cache[n][0]

    lo, hi = 0, len(units)  # invariant: lo passes (or is 0), answer in [lo, hi]
    if trial(hi):
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if trial(mid):
            lo = mid
        else:
            hi = mid
    if lo == 0 or not trial(lo):
        lo = 0
    int8_ops = sorted(k for u in units[:lo] for k in u)
    model = cache[lo][2] if lo in cache else quantize.quantize(
        float_model, ops, [o.index for o in ops if o.index not in set(int8_ops)], calibration)
    return SearchResult(int8_ops, model, units, growth, lo, trace)
