"""Mixed int8 quantization with ai-edge-quantizer: which ops stay float, and the recipe for it.

A scheme is a set of ops left float; everything else gets static int8 (per-channel int8
weights, int8 activations calibrated by min/max on real inputs). Model inputs and outputs stay
float32, so callers never see quantization parameters.

The recipe uses the quantizer's per-op rules: an op is addressed by its *scope*, the names of its
output tensors joined by ``;`` with a trailing ``;``. Each float op gets an anchored, escaped
regular expression of its own scope, so a rule never catches a neighbour with a longer name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe_manager

from models import rewrite

logger = logging.getLogger(__name__)

_INT8 = qtyping.OpQuantizationConfig(
    activation_tensor_config=qtyping.TensorQuantizationConfig(
        num_bits=8, symmetric=False, granularity=qtyping.QuantGranularity.TENSORWISE),
    weight_tensor_config=qtyping.TensorQuantizationConfig(
        num_bits=8, symmetric=True, granularity=qtyping.QuantGranularity.CHANNELWISE),
    compute_precision=qtyping.ComputePrecision.INTEGER,
    explicit_dequantize=False,
)
_NO_QUANT = algorithm_manager.AlgorithmName.NO_QUANTIZE
_MIN_MAX = algorithm_manager.AlgorithmName.MIN_MAX_UNIFORM_QUANT


@dataclass(frozen=True)
class OpInfo:
    """One op of the float model, as the scheme search sees it.

    Attributes:
        index: Position in subgraph 0.
        kind: Builtin operator name (``CONV_2D``...).
        scope: The quantizer's scope string of the op.
        shape: Shape of its first output.
        macs: Multiply-accumulates (convolutions only; 0 otherwise).
    """

    index: int
    kind: str
    scope: str
    shape: tuple[int, ...]
    macs: int


def list_ops(model_bytes: bytes) -> list[OpInfo]:
    """The ops of a float model with their scopes, output shapes and cost."""
    model = rewrite.read(model_bytes)
    sg = model.subgraphs[0]
    ops: list[OpInfo] = []
    for k, op in enumerate(sg.operators):
        out = sg.tensors[op.outputs[0]]
        names = [rewrite._name(sg.tensors[i]) for i in op.outputs if i >= 0]
        kind = rewrite.op_name(model, op)
        shape = tuple(int(s) for s in out.shape)
        macs = 0
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = tuple(int(s) for s in sg.tensors[op.inputs[1]].shape)
            per = w[1] * w[2] * (w[3] if kind == "CONV_2D" else 1)
            macs = int(np.prod(shape)) * per
        ops.append(OpInfo(k, kind, ";".join(names) + ";", shape, macs))
    return ops


def static_int8_recipe(float_scopes: Iterable[str] = ()) -> list[dict[str, Any]]:
    """A recipe: static int8 everywhere, float32 model inputs/outputs, the given ops float.

    Args:
        float_scopes: Scopes (see :class:`OpInfo`) of the ops to leave float.

    Returns:
        The quantizer's recipe (a list of rule dicts, later rules win).
    """
    rm = recipe_manager.RecipeManager()
    rm.add_quantization_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, _INT8, _MIN_MAX)
    rm.add_quantization_config(".*", qtyping.TFLOperationName.INPUT, None, _NO_QUANT)
    rm.add_quantization_config(".*", qtyping.TFLOperationName.OUTPUT, None, _NO_QUANT)
    for scope in float_scopes:
        rm.add_quantization_config("^" + re.escape(scope) + "$",
                                   qtyping.TFLOperationName.ALL_SUPPORTED, None, _NO_QUANT)
    return list(rm.get_quantization_recipe())


def recipe(ops: Sequence[OpInfo], float_ops: Iterable[int]) -> list[dict[str, Any]]:
    """:func:`static_int8_recipe` with the ops of the given indices left float.

    Args:
        ops: The model's ops from :func:`list_ops`.
        float_ops: Indices of the ops to leave float.
    """
    return static_int8_recipe(ops[k].scope for k in sorted(set(float_ops)))


def calibrate(float_model: bytes, inputs: np.ndarray[Any, Any], input_name: str,
              ops: Sequence[OpInfo]) -> dict[str, Any]:
    """Min/max statistics of every tensor over the calibration inputs (whole-int8 recipe).

    The statistics do not depend on which ops end up float, so one calibration serves every
    scheme tried.

    Args:
        float_model: The rewritten float32 model (folded weights, with a signature).
        inputs: (n, 1, H, W, 3) float32 calibration inputs.
        input_name: Signature input name.
        ops: The model's ops.

    Returns:
        The quantizer's calibration result.
    """
    q = quantizer.Quantizer(float_model, recipe(ops, ()))
    data = [{input_name: np.ascontiguousarray(x)} for x in inputs]
    result: dict[str, Any] = q.calibrate({rewrite.SIGNATURE_KEY: data}, num_threads=1)
    return result


def quantize(float_model: bytes, ops: Sequence[OpInfo], float_ops: Iterable[int],
             calibration: dict[str, Any]) -> bytes:
    """Quantizes with the given ops left float.

    Args:
        float_model: The rewritten float32 model.
        ops: The model's ops.
        float_ops: Indices of ops to leave float.
        calibration: From :func:`calibrate`.

    Returns:
        The quantized ``.tflite`` bytes.
    """
    q = quantizer.Quantizer(float_model, recipe(ops, float_ops))
    result = q.quantize(calibration, enable_progress_report=False)
    return bytes(result.quantized_model)
