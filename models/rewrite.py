"""Flatbuffer rewrites of the MediaPipe BlazePose ``.tflite`` files.

The files as Google ships them cannot be given to ai-edge-quantizer as they are, and they carry
work edge-pose never uses:

* their weights are fp16 (and, in the detector, sparse) constants expanded at load time by
  ``DENSIFY`` and ``DEQUANTIZE`` ops; the quantizer wants plain float32 constants;
* they have no SignatureDef, which the quantizer's calibrator needs to feed inputs;
* the landmark models also compute a 256x256 segmentation mask and a 64x64x39 heatmap, about
  half of their float run time, that the pipeline never reads.

Every function here works on the ``ModelT`` object tree of ``ai_edge_litert.schema_py_generated``
and returns new bytes; nothing is written to disk.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from ai_edge_litert.tools import flatbuffer_utils

SIGNATURE_KEY = "serving_default"

_OPCODE_NAMES: dict[int, str] = {
    int(v): k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def read(model_bytes: bytes) -> Any:
    """Parses ``.tflite`` bytes into a mutable ``ModelT`` (a deep copy, safe to edit)."""
    return copy.deepcopy(flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes)))


def write(model: Any) -> bytes:
    """Serialises a ``ModelT`` to ``.tflite`` bytes (deterministic for a given tree)."""
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def op_name(model: Any, op: Any) -> str:
    """The builtin operator name of ``op`` (e.g. ``"CONV_2D"``)."""
    code = model.operatorCodes[op.opcodeIndex]
    return _OPCODE_NAMES.get(max(int(code.builtinCode), int(code.deprecatedBuiltinCode)),
                             "CUSTOM")


def tensor_index(model: Any, name: str) -> int:
    """Index in subgraph 0 of the tensor called ``name``.

    Raises:
        KeyError: When no tensor has that name.
    """
    for i, t in enumerate(model.subgraphs[0].tensors):
        if _name(t) == name:
            return i
    raise KeyError(f"no tensor named {name!r}")


def _name(tensor: Any) -> str:
    n = tensor.name
    return n.decode() if isinstance(n, bytes) else str(n)


def fold_weight_expansion(model: Any, values: dict[int, np.ndarray[Any, Any]],
                          ops: Iterable[str] = ("DEQUANTIZE", "DENSIFY")) -> Any:
    """Replaces weight-expanding ops whose input is constant by float32 constants.

    ``DENSIFY`` turns a sparse constant into a dense one and ``DEQUANTIZE`` turns an fp16 constant
    into float32. Their outputs do not depend on the model input, so they are read once from an
    interpreter run (see :func:`constant_values`) and stored as constant buffers; the ops go away.

    Args:
        model: The ``ModelT`` to edit in place.
        values: Tensor index -> value of every candidate op output, from :func:`constant_values`.
        ops: Operator names to fold (only those with constant inputs are touched).

    Returns:
        ``model``, edited; unused tensors and buffers are left for :func:`compact`.
    """
    sg = model.subgraphs[0]
    wanted = set(ops)
    constant = {i for i, t in enumerate(sg.tensors) if _has_data(model, t)}
    kept: list[Any] = []
    for op in sg.operators:
        if op_name(model, op) in wanted and all(i in constant for i in op.inputs if i >= 0):
            out = op.outputs[0]
            value = np.ascontiguousarray(values[out], dtype=np.float32)
            t = sg.tensors[out]
            t.type = schema.TensorType.FLOAT32
            t.sparsity = None
            t.buffer = len(model.buffers)
            buf = schema.BufferT()
            buf.data = np.frombuffer(value.tobytes(), dtype=np.uint8)
            model.buffers.append(buf)
            constant.add(out)
        else:
            kept.append(op)
    sg.operators = kept
    return model


def _has_data(model: Any, tensor: Any) -> bool:
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def constant_candidates(model: Any, ops: Iterable[str] = ("DEQUANTIZE", "DENSIFY")) -> list[int]:
    """Output tensor indices of the weight-expanding ops :func:`fold_weight_expansion` may fold."""
    wanted = set(ops)
    return [op.outputs[0] for op in model.subgraphs[0].operators if op_name(model, op) in wanted]


def prune_outputs(model: Any, keep: Sequence[str]) -> Any:
    """Makes ``keep`` the only outputs and drops every op that only the others needed.

    Args:
        model: The ``ModelT`` to edit in place.
        keep: Output tensor names to keep, in the order the new model lists them.

    Returns:
        ``model``, edited; call :func:`compact` afterwards.
    """
    sg = model.subgraphs[0]
    sg.outputs = [tensor_index(model, n) for n in keep]
    needed = set(sg.outputs)
    kept_reversed: list[Any] = []
    for op in reversed(sg.operators):
        if any(o in needed for o in op.outputs):
            kept_reversed.append(op)
            needed.update(i for i in op.inputs if i >= 0)
            needed.update(i for i in (op.intermediates or []) if i >= 0)
    sg.operators = kept_reversed[::-1]
    return model


def compact(model: Any) -> Any:
    """Drops tensors, buffers and operator codes nothing refers to, and all metadata.

    The metadata (``min_runtime_version``, ``TFLITE_METADATA``, ``reduced_precision_support``)
    describes the original file and would be stale after a rewrite; the licence and origin are
    recorded in ``models/README.md`` and ``manifest.json`` instead.

    Args:
        model: The ``ModelT`` to edit in place.

    Returns:
        ``model``, edited.
    """
    sg = model.subgraphs[0]
    used: list[int] = []
    seen: set[int] = set()

    def use(i: int) -> None:
        if i >= 0 and i not in seen:
            seen.add(i)
            used.append(i)

    for i in sg.inputs:
        use(i)
    for op in sg.operators:
        for i in [*op.inputs, *op.outputs, *(op.intermediates or [])]:
            use(i)
    for i in sg.outputs:
        use(i)
    used.sort()
    t_map = {old: new for new, old in enumerate(used)}

    def remap(idx: Sequence[int]) -> list[int]:
        return [t_map[i] if i >= 0 else -1 for i in idx]

    sg.tensors = [sg.tensors[i] for i in used]
    sg.inputs = remap(sg.inputs)
    sg.outputs = remap(sg.outputs)
    for op in sg.operators:
        op.inputs = remap(op.inputs)
        op.outputs = remap(op.outputs)
        if op.intermediates:
            op.intermediates = remap(op.intermediates)

    b_map: dict[int, int] = {0: 0}
    buffers = [schema.BufferT()]
    for t in sg.tensors:
        if t.buffer not in b_map:
            b_map[t.buffer] = len(buffers)
            buffers.append(model.buffers[t.buffer])
        t.buffer = b_map[t.buffer]
    model.buffers = buffers

    c_map: dict[int, int] = {}
    codes: list[Any] = []
    for op in sg.operators:
        if op.opcodeIndex not in c_map:
            c_map[op.opcodeIndex] = len(codes)
            codes.append(model.operatorCodes[op.opcodeIndex])
        op.opcodeIndex = c_map[op.opcodeIndex]
    model.operatorCodes = codes
    model.metadata = None
    model.metadataBuffer = None
    model.signatureDefs = None
    return model


def add_signature(model: Any) -> Any:
    """Adds a ``serving_default`` SignatureDef naming every input and output by its tensor name.

    Args:
        model: The ``ModelT`` to edit in place (its previous signatures are replaced).

    Returns:
        ``model``, edited.
    """
    sg = model.subgraphs[0]

    def tmap(i: int) -> Any:
        m = schema.TensorMapT()
        m.name = _name(sg.tensors[i])
        m.tensorIndex = i
        return m

    sig = schema.SignatureDefT()
    sig.signatureKey = SIGNATURE_KEY
    sig.subgraphIndex = 0
    sig.inputs = [tmap(i) for i in sg.inputs]
    sig.outputs = [tmap(i) for i in sg.outputs]
    model.signatureDefs = [sig]
    return model


def op_histogram(model_bytes: bytes) -> dict[str, int]:
    """Number of ops per operator name in subgraph 0."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    hist: dict[str, int] = {}
    for op in model.subgraphs[0].operators:
        n = op_name(model, op)
        hist[n] = hist.get(n, 0) + 1
    return dict(sorted(hist.items()))


def constant_values(model_bytes: bytes, indices: Sequence[int]) -> dict[int, np.ndarray[Any, Any]]:
    """Values of the given tensors after one run of the original model on a zero input.

    The tensors must depend only on constants (the outputs of weight-expanding ops), so the input
    does not matter. The runtime's own kernels do the expansion, so the folded constants are
    exactly what the original file computes at load time.

    Args:
        model_bytes: The original ``.tflite`` file.
        indices: Tensor indices in subgraph 0.

    Returns:
        Tensor index -> copy of its value.
    """
    # The reference kernels, not XNNPACK: a delegate would take the expanding ops over and
    # never materialise their outputs.
    interp = Interpreter(model_content=model_bytes, num_threads=1,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                         experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
    interp.invoke()
    return {i: np.array(interp.get_tensor(i)) for i in indices}


def rewrite(model_bytes: bytes, keep_outputs: Sequence[str], *, fold: bool) -> bytes:
    """The full rewrite: optional weight folding, output pruning, compaction and a signature.

    Args:
        model_bytes: The original ``.tflite`` file.
        keep_outputs: Output tensor names to keep (all others are cut with the ops only they
            need).
        fold: Fold fp16/sparse weights into float32 constants (needed for quantization); when
            False the weights stay as the original stores them.

    Returns:
        The rewritten ``.tflite`` bytes.
    """
    model = read(model_bytes)
    if fold:
        values = constant_values(model_bytes, constant_candidates(model))
        fold_weight_expansion(model, values)
    prune_outputs(model, keep_outputs)
    compact(model)
    add_signature(model)
    return write(model)


def name_io_after_signature(model_bytes: bytes) -> bytes:
    """Gives the graph's input and output tensors the names their signature uses.

    ai-edge-quantizer appends float boundary ops and calls the new output tensors
    ``<name>_dequant``; the original names then belong to inner int8 tensors. Renaming makes the
    float and int8 files expose the same tensor names (the inner ones get a ``_int8`` suffix).

    Args:
        model_bytes: A ``.tflite`` file with one signature over subgraph 0.

    Returns:
        The renamed file, signature and graph inputs/outputs otherwise unchanged.
    """
    model = read(model_bytes)
    sg = model.subgraphs[0]
    sig = model.signatureDefs[0]
    wanted: dict[int, str] = {}
    for maps, io in ((sig.inputs, sg.inputs), (sig.outputs, sg.outputs)):
        for m in maps:
            name = m.name.decode() if isinstance(m.name, bytes) else str(m.name)
            if m.tensorIndex not in io:
                raise ValueError(f"signature tensor {name!r} is not a graph input/output")
            wanted[int(m.tensorIndex)] = name
    taken = set(wanted.values())
    for i, t in enumerate(sg.tensors):
        if i not in wanted and _name(t) in taken:
            t.name = _name(t) + "_int8"
    for i, name in wanted.items():
        sg.tensors[i].name = name
    return write(model)


def _opcode(model: Any, builtin: int, version: int = 1) -> int:
    """Index of ``builtin`` in the model's operator codes, added if absent."""
    for i, c in enumerate(model.operatorCodes):
        if max(int(c.builtinCode), int(c.deprecatedBuiltinCode)) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _add_tensor(model: Any, like: Any, name: str, data: bytes | None) -> int:
    """Appends a copy of tensor ``like`` (type, shape, sparsity) named ``name`` with ``data``."""
    sg = model.subgraphs[0]
    t = schema.TensorT()
    t.name = name
    t.shape = list(like.shape)
    t.type = like.type
    t.sparsity = copy.deepcopy(like.sparsity)
    t.buffer = 0
    if data is not None:
        buf = schema.BufferT()
        buf.data = np.frombuffer(data, dtype=np.uint8)
        model.buffers.append(buf)
        t.buffer = len(model.buffers) - 1
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def float_weights_to_fp16(model_bytes: bytes, original: bytes | None = None) -> bytes:
    """Stores float32 weights of float ops as the original did (fp16, sparse), when lossless.

    The float ops a mixed int8 model keeps get plain float32 weights from the quantizer, two to
    eight times the size of the original's fp16 (and, in the detector, sparse) weights. For each
    float32 constant input of a CONV_2D or DEPTHWISE_CONV_2D:

    * if ``original`` computes a tensor of the same name with ``DEQUANTIZE`` (after
      ``DENSIFY`` for sparse weights) and that chain yields exactly these values, the chain and
      its stored fp16/sparse constant are copied over;
    * otherwise, if the values survive a float32 -> fp16 -> float32 round trip, they are stored
      as fp16 behind a new ``DEQUANTIZE``.

    The expanding ops are put at the start of the graph, as in MediaPipe's own files; the
    runtime folds them at load time, so outputs are bit-identical and speed is unchanged.

    Args:
        model_bytes: A ``.tflite`` file.
        original: The file the float32 weights were folded from (optional).

    Returns:
        The smaller file.
    """
    model = read(model_bytes)
    sg = model.subgraphs[0]
    chains: dict[str, list[tuple[Any, list[Any]]]] = {}
    orig_model = None
    if original is not None:
        orig_model = read(original)
        osg = orig_model.subgraphs[0]
        producer = {op.outputs[0]: op for op in osg.operators}
        for op in osg.operators:
            if op_name(orig_model, op) != "DEQUANTIZE":
                continue
            chain = [op]
            src = op.inputs[0]
            while src in producer and op_name(orig_model, producer[src]) == "DENSIFY":
                chain.insert(0, producer[src])
                src = producer[src].inputs[0]
            if _has_data(orig_model, osg.tensors[src]):
                chains[_name(osg.tensors[op.outputs[0]])] = [(c, []) for c in chain]
    graph_io = set(sg.inputs) | set(sg.outputs)
    new_ops: list[Any] = []
    done: set[int] = set()
    for op in list(sg.operators):
        if op_name(model, op) not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        for i in op.inputs[1:]:
            if i < 0 or i in done or i in graph_io:
                continue
            t = sg.tensors[i]
            if t.type != schema.TensorType.FLOAT32 or not _has_data(model, t):
                continue
            value = np.frombuffer(bytes(model.buffers[t.buffer].data), dtype=np.float32)
            name = _name(t)
            if orig_model is not None and name in chains:
                ops_chain = _transplant(model, orig_model, [c for c, _ in chains[name]], i)
                if ops_chain is not None:
                    new_ops.extend(ops_chain)
                    done.add(i)
                    continue
            half = value.astype(np.float16)
            if not np.array_equal(half.astype(np.float32), value):
                continue
            h = _add_tensor(model, t, name + "_fp16", half.tobytes())
            sg.tensors[h].type = schema.TensorType.FLOAT16
            deq = schema.OperatorT()
            deq.opcodeIndex = _opcode(model, schema.BuiltinOperator.DEQUANTIZE, 2)
            deq.inputs = [h]
            deq.outputs = [i]
            t.buffer = 0
            new_ops.append(deq)
            done.add(i)
    sg.operators = new_ops + list(sg.operators)
    compact_buffers(model)
    return write(model)


def _transplant(model: Any, orig_model: Any, chain: list[Any], target: int) -> list[Any] | None:
    """Copies an original DENSIFY/DEQUANTIZE chain so it computes tensor ``target``.

    Returns the new ops (in order), or None when the chain would not reproduce ``target``'s
    current float32 values exactly.
    """
    osg = orig_model.subgraphs[0]
    sg = model.subgraphs[0]
    expect = np.frombuffer(bytes(model.buffers[sg.tensors[target].buffer].data), np.float32)
    src_t = osg.tensors[chain[0].inputs[0]]
    if chain[0] is chain[-1] and src_t.sparsity is None:
        stored = np.frombuffer(bytes(orig_model.buffers[src_t.buffer].data), np.float16)
        if not np.array_equal(stored.astype(np.float32), expect):
            return None
    mapping: dict[int, int] = {}
    src = chain[0].inputs[0]
    mapping[src] = _add_tensor(model, src_t, _name(src_t),
                               bytes(orig_model.buffers[src_t.buffer].data))
    new_ops = []
    for k, op in enumerate(chain):
        out = op.outputs[0]
        if k == len(chain) - 1:
            mapping[out] = target
        else:
            mapping[out] = _add_tensor(model, osg.tensors[out], _name(osg.tensors[out]), None)
        code = orig_model.operatorCodes[op.opcodeIndex]
        n = copy.deepcopy(op)
        n.opcodeIndex = _opcode(model, max(int(code.builtinCode),
                                           int(code.deprecatedBuiltinCode)), int(code.version))
        n.inputs = [mapping[i] for i in op.inputs]
        n.outputs = [mapping[out]]
        new_ops.append(n)
    sg.tensors[target].buffer = 0
    return new_ops


def compact_buffers(model: Any) -> Any:
    """Drops buffers no tensor refers to (keeps buffer 0, the empty sentinel)."""
    b_map: dict[int, int] = {0: 0}
    buffers = [schema.BufferT()]
    for sg in model.subgraphs:
        for t in sg.tensors:
            if t.buffer not in b_map:
                b_map[t.buffer] = len(buffers)
                buffers.append(model.buffers[t.buffer])
            t.buffer = b_map[t.buffer]
    for md in model.metadata or []:
        if md.buffer not in b_map:
            b_map[md.buffer] = len(buffers)
            buffers.append(model.buffers[md.buffer])
        md.buffer = b_map[md.buffer]
    model.buffers = buffers
    return model
