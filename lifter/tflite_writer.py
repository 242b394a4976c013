"""Writes the lifter MLP as a TFLite flatbuffer, without TensorFlow.

The network is only FULLY_CONNECTED (ReLU fused) and ADD ops, so it is written directly with the
flatbuffer object API that ``ai_edge_litert`` ships (``schema_py_generated``): no converter, no
TensorFlow, and the graph is exactly the trained one (batch norm folded into the linear layers).
A ``serving_default`` SignatureDef is added, which ai-edge-quantizer needs. The batch dimension
is dynamic (shape signature -1) so the runtime can lift every person of a frame in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import flatbuffers  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
from ai_edge_litert import schema_py_generated as fb

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Dense:
    """One folded linear layer.

    Attributes:
        weight: (out, in) float32.
        bias: (out,) float32.
        relu: Whether ReLU follows.
    """

    weight: F32
    bias: F32
    relu: bool


@dataclass(frozen=True)
class ResidualMLP:
    """Martinez-style MLP: stem, residual blocks of two layers each, head.

    Attributes:
        stem: Input layer (ReLU).
        blocks: Pairs of layers; each block's output is added to its input.
        head: Output layer (linear).
    """

    stem: Dense
    blocks: tuple[tuple[Dense, Dense], ...]
    head: Dense


def write_tflite(mlp: ResidualMLP, input_name: str = "joints_2d",
                 output_name: str = "joints_3d") -> bytes:
    """Serialises the MLP as a float32 TFLite model.

    Args:
        mlp: The network.
        input_name: Name of the (batch, in) input tensor and signature input.
        output_name: Name of the (batch, out) output tensor and signature output.

    Returns:
        The .tflite bytes.
    """
    buffers: list[fb.BufferT] = [fb.BufferT()]
    tensors: list[fb.TensorT] = []

    def tensor(name: str, shape: tuple[int, ...], data: F32 | None = None,
               dynamic_batch: bool = False) -> int:
        t = fb.TensorT()
        t.name = name
        t.shape = list(shape)
        if dynamic_batch:
            t.shapeSignature = [-1, *shape[1:]]
        t.type = fb.TensorType.FLOAT32
        if data is None:
            t.buffer = 0
        else:
            b = fb.BufferT()
            b.data = np.ascontiguousarray(data, dtype="<f4").tobytes()
            buffers.append(b)
            t.buffer = len(buffers) - 1
        tensors.append(t)
        return len(tensors) - 1

    ops: list[fb.OperatorT] = []
    FC, ADD = 0, 1

    def dense(x: int, layer: Dense, name: str, out: int | None = None) -> int:
        w = tensor(f"{name}/weight", layer.weight.shape, layer.weight)
        b = tensor(f"{name}/bias", layer.bias.shape, layer.bias)
        y = out if out is not None else tensor(name, (1, layer.weight.shape[0]),
                                               dynamic_batch=True)
        op = fb.OperatorT()
        op.opcodeIndex = FC
        op.inputs = [x, w, b]
        op.outputs = [y]
        op.builtinOptionsType = fb.BuiltinOptions.FullyConnectedOptions
        opts = fb.FullyConnectedOptionsT()
        opts.fusedActivationFunction = (fb.ActivationFunctionType.RELU if layer.relu
                                        else fb.ActivationFunctionType.NONE)
        op.builtinOptions = opts
        ops.append(op)
        return y

    def add(a: int, b: int, name: str, width: int) -> int:
        y = tensor(name, (1, width), dynamic_batch=True)
        op = fb.OperatorT()
        op.opcodeIndex = ADD
        op.inputs = [a, b]
        op.outputs = [y]
        op.builtinOptionsType = fb.BuiltinOptions.AddOptions
        op.builtinOptions = fb.AddOptionsT()
        ops.append(op)
        return y

    x_in = tensor(input_name, (1, mlp.stem.weight.shape[1]), dynamic_batch=True)
    h = dense(x_in, mlp.stem, "stem")
    for i, (la, lb) in enumerate(mlp.blocks):
        t = dense(h, la, f"block{i}/fc1")
        t = dense(t, lb, f"block{i}/fc2")
        h = add(h, t, f"block{i}/add", la.weight.shape[0])
    y_out = tensor(output_name, (1, mlp.head.weight.shape[0]), dynamic_batch=True)
    dense(h, mlp.head, "head", out=y_out)

    sg = fb.SubGraphT()
    sg.name = "main"
    sg.tensors = tensors
    sg.inputs = [x_in]
    sg.outputs = [y_out]
    sg.operators = ops
    codes = []
    for builtin in (fb.BuiltinOperator.FULLY_CONNECTED, fb.BuiltinOperator.ADD):
        c = fb.OperatorCodeT()
        c.builtinCode = builtin
        c.deprecatedBuiltinCode = builtin
        c.version = 1
        codes.append(c)
    sig = fb.SignatureDefT()
    sig.signatureKey = "serving_default"
    sig.subgraphIndex = 0
    tin, tout = fb.TensorMapT(), fb.TensorMapT()
    tin.name, tin.tensorIndex = input_name, x_in
    tout.name, tout.tensorIndex = output_name, y_out
    sig.inputs, sig.outputs = [tin], [tout]
    model = fb.ModelT()
    model.version = 3
    model.description = "edge-pose 3D lifter (lifter/train.py)"
    model.operatorCodes = codes
    model.subgraphs = [sg]
    model.buffers = buffers
    model.signatureDefs = [sig]
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
