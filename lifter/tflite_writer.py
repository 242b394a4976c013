"""Writes the lifter MLP as a TFLite flatbuffer, without TensorFlow.

The networks are only FULLY_CONNECTED (ReLU fused), ADD and (temporal convolutions) RESHAPE ops,
so they are written directly with the flatbuffer object API that ``ai_edge_litert`` ships
(``schema_py_generated``): no converter, no TensorFlow, and the graph is exactly the trained one
(batch norm folded into the linear layers).
A ``serving_default`` SignatureDef is added, which ai-edge-quantizer needs. The batch dimension
is dynamic (shape signature -1) so the runtime can lift every person of a frame in one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class TemporalConv:
    """Causal temporal convolutions over a window of 3 ** L frames (:mod:`lifter.model`).

    Each level reshapes its rows so that 3 consecutive time steps form one row, applies a linear
    layer (a kernel-3 stride-3 convolution over time) and a residual 1x1 convolution.

    Attributes:
        levels: Per level (strided convolution, residual 1x1 convolution), both with ReLU.
        head: Output layer (linear).
    """

    levels: tuple[tuple[Dense, Dense], ...]
    head: Dense


class _Graph:
    """Tensors, buffers and operators of one float32 subgraph with a dynamic batch."""

    OPS = (fb.BuiltinOperator.FULLY_CONNECTED, fb.BuiltinOperator.ADD,
           fb.BuiltinOperator.RESHAPE)

    def __init__(self) -> None:
        self.buffers: list[fb.BufferT] = [fb.BufferT()]
        self.tensors: list[fb.TensorT] = []
        self.ops: list[fb.OperatorT] = []
        self.used: list[int] = []  # builtin codes in first-use order

    def _code(self, builtin: int) -> int:
        if builtin not in self.used:
            self.used.append(builtin)
        return self.used.index(builtin)

    def tensor(self, name: str, shape: tuple[int, ...], data: npt.NDArray[Any] | None = None,
               dynamic_batch: bool = False) -> int:
        t = fb.TensorT()
        t.name = name
        t.shape = list(shape)
        if dynamic_batch:
            t.shapeSignature = [-1, *shape[1:]]
        t.type = (fb.TensorType.INT32 if data is not None and data.dtype == np.int32
                  else fb.TensorType.FLOAT32)
        if data is None:
            t.buffer = 0
        else:
            b = fb.BufferT()
            dt = "<i4" if data.dtype == np.int32 else "<f4"
            b.data = np.ascontiguousarray(data, dtype=dt).tobytes()
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def dense(self, x: int, layer: Dense, name: str, rows: int = 1,
              out: int | None = None) -> int:
        w = self.tensor(f"{name}/weight", layer.weight.shape, layer.weight)
        b = self.tensor(f"{name}/bias", layer.bias.shape, layer.bias)
        y = out if out is not None else self.tensor(name, (rows, layer.weight.shape[0]),
                                                    dynamic_batch=True)
        op = fb.OperatorT()
        op.opcodeIndex = self._code(fb.BuiltinOperator.FULLY_CONNECTED)
        op.inputs = [x, w, b]
        op.outputs = [y]
        op.builtinOptionsType = fb.BuiltinOptions.FullyConnectedOptions
        opts = fb.FullyConnectedOptionsT()
        opts.fusedActivationFunction = (fb.ActivationFunctionType.RELU if layer.relu
                                        else fb.ActivationFunctionType.NONE)
        op.builtinOptions = opts
        self.ops.append(op)
        return y

    def add(self, a: int, b: int, name: str, width: int, rows: int = 1) -> int:
        y = self.tensor(name, (rows, width), dynamic_batch=True)
        op = fb.OperatorT()
        op.opcodeIndex = self._code(fb.BuiltinOperator.ADD)
        op.inputs = [a, b]
        op.outputs = [y]
        op.builtinOptionsType = fb.BuiltinOptions.AddOptions
        op.builtinOptions = fb.AddOptionsT()
        self.ops.append(op)
        return y

    def reshape(self, x: int, name: str, rows: int, width: int) -> int:
        """(r, w) -> (r * w / width, width): the batch dimension stays dynamic (-1)."""
        shape = self.tensor(f"{name}/shape", (2,), np.array([-1, width], np.int32))
        y = self.tensor(name, (rows, width), dynamic_batch=True)
        op = fb.OperatorT()
        op.opcodeIndex = self._code(fb.BuiltinOperator.RESHAPE)
        op.inputs = [x, shape]
        op.outputs = [y]
        op.builtinOptionsType = fb.BuiltinOptions.ReshapeOptions
        opts = fb.ReshapeOptionsT()
        opts.newShape = [-1, width]
        op.builtinOptions = opts
        self.ops.append(op)
        return y

    def finish(self, x_in: int, y_out: int, input_name: str, output_name: str) -> bytes:
        sg = fb.SubGraphT()
        sg.name = "main"
        sg.tensors = self.tensors
        sg.inputs = [x_in]
        sg.outputs = [y_out]
        sg.operators = self.ops
        codes = []
        for builtin in self.used:
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
        model.buffers = self.buffers
        model.signatureDefs = [sig]
        builder = flatbuffers.Builder(1 << 20)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def write_tflite(net: ResidualMLP | TemporalConv, input_name: str = "joints_2d",
                 output_name: str = "joints_3d") -> bytes:
    """Serialises the network as a float32 TFLite model.

    Args:
        net: The network.
        input_name: Name of the (batch, in) input tensor and signature input.
        output_name: Name of the (batch, out) output tensor and signature output.

    Returns:
        The .tflite bytes.
    """
    g = _Graph()
    if isinstance(net, TemporalConv):
        first = net.levels[0][0].weight.shape[1]  # 3 frames x features
        steps = 3 ** len(net.levels)  # time steps of the window
        x_in = g.tensor(input_name, (1, steps * first // 3), dynamic_batch=True)
        h = x_in
        for i, (conv, mix) in enumerate(net.levels):
            steps //= 3
            h = g.reshape(h, f"level{i}/taps", steps, conv.weight.shape[1])
            h = g.dense(h, conv, f"level{i}/conv", steps)
            t = g.dense(h, mix, f"level{i}/mix", steps)
            h = g.add(h, t, f"level{i}/add", mix.weight.shape[0], steps)
        y_out = g.tensor(output_name, (1, net.head.weight.shape[0]), dynamic_batch=True)
        g.dense(h, net.head, "head", out=y_out)
        return g.finish(x_in, y_out, input_name, output_name)
    x_in = g.tensor(input_name, (1, net.stem.weight.shape[1]), dynamic_batch=True)
    h = g.dense(x_in, net.stem, "stem")
    for i, (la, lb) in enumerate(net.blocks):
        t = g.dense(h, la, f"block{i}/fc1")
        t = g.dense(t, lb, f"block{i}/fc2")
        h = g.add(h, t, f"block{i}/add", la.weight.shape[0])
    y_out = g.tensor(output_name, (1, net.head.weight.shape[0]), dynamic_batch=True)
    g.dense(h, net.head, "head", out=y_out)
    return g.finish(x_in, y_out, input_name, output_name)
