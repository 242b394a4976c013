"""Model manifest, integrity checks and TFLite interpreter creation.

The models edge-pose runs are listed in ``manifest.json`` beside them (``models/`` in a checkout,
``edge/_models`` in an installed wheel, or the folder named by ``$EDGE_POSE_MODELS``). Each entry
names its file, the file's sha256, its precision scheme and its input and output tensors with their
meaning. :func:`load_model` verifies the file against the manifest before any byte of it reaches
the runtime, so a truncated or altered file gives a clear error instead of a crash in C++.

Two runtimes are supported. ``ai-edge-litert`` is preferred: it carries XNNPACK's int8 kernels
and has wheels for Python 3.10-3.14 on x86_64 and aarch64. ``tflite-runtime`` 2.14 is used only
when it is all that is installed; it runs int8 models 10-20x slower than float and needs numpy<2.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

REBUILD_HINT = "rebuild with `make models` (see README.md)"
MANIFEST_NAME = "manifest.json"

Role = Literal["detector", "landmark", "lifter"]
Precision = Literal["float", "int8"]


class ModelError(RuntimeError):
    """A model cannot be used: missing, corrupt, mismatched or without a runtime."""


class RuntimeMissingError(ModelError):
    """Neither ai-edge-litert nor tflite-runtime is installed."""


class SlowInt8Warning(UserWarning):
    """An int8 model is about to run on tflite-runtime, which has no fast int8 kernels."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor as the manifest describes it.

    Attributes:
        key: Stable semantic name used by edge-pose code (``"landmarks"``, ``"scores"``...).
        name: Tensor name inside the .tflite file.
        shape: Expected shape, batch dimension included.
        dtype: numpy dtype name, e.g. ``"float32"``.
        meaning: Human-readable description with units.
    """

    key: str
    name: str
    shape: tuple[int, ...]
    dtype: str
    meaning: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TensorSpec:
        """Builds a spec from a manifest entry."""
        return cls(
            key=str(d["key"]),
            name=str(d["name"]),
            shape=tuple(int(s) for s in d["shape"]),
            dtype=str(d["dtype"]),
            meaning=str(d.get("meaning", "")),
        )


@dataclass(frozen=True)
class ModelEntry:
    """One model of the manifest.

    Attributes:
        key: Manifest key, ``<role>_<variant>_<precision>`` or ``<role>_<precision>``.
        file: File name relative to the manifest's folder.
        sha256: Expected sha256 of the file (hex).
        role: ``detector``, ``landmark`` or ``lifter``.
        variant: ``lite``, ``full``, ``heavy`` or ``None``.
        precision: ``float`` or ``int8`` (int8 may be a mixed scheme; see ``scheme``).
        scheme: What exactly was quantized and what stayed float.
        inputs: Input tensors in interpreter order.
        outputs: Output tensors (order as listed; looked up by name at run time).
        raw: The whole manifest entry, for reporting.
    """

    key: str
    file: str
    sha256: str
    role: str
    variant: str | None
    precision: str
    scheme: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json`` and the folder it lives in."""

    folder: Path
    models: Mapping[str, ModelEntry]
    raw: Mapping[str, Any]

    def path(self, key: str) -> Path:
        """Absolute path of a model's file."""
        return self.folder / self.entry(key).file

    def entry(self, key: str) -> ModelEntry:
        """The entry for ``key``; raises ModelError listing the known keys otherwise."""
        try:
            return self.models[key]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelError(f"model {key!r} is not in {self.folder / MANIFEST_NAME} "
                             f"(known: {known})") from None

    def find(self, role: str, variant: str | None, precision: str) -> ModelEntry:
        """The entry for a role/variant/precision triple."""
        for e in self.models.values():
            if e.role == role and e.variant == variant and e.precision == precision:
                return e
        have = ", ".join(f"{e.role}/{e.variant}/{e.precision}" for e in self.models.values())
        raise ModelError(f"no {role} model with variant={variant} precision={precision} in "
                         f"{self.folder / MANIFEST_NAME} (have: {have})")


def default_models_dir() -> Path:
    """Where the models are: ``$EDGE_POSE_MODELS``, the wheel's ``edge/_models``, or the checkout.

    Returns:
        The folder holding ``manifest.json``.
    """
    env = os.environ.get("EDGE_POSE_MODELS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    packaged = here / "_models"
    if (packaged / MANIFEST_NAME).is_file():
        return packaged
    return here.parent / "models"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(folder: Path | None = None) -> Manifest:
    """Reads and checks ``manifest.json``.

    Args:
        folder: Folder holding the manifest; :func:`default_models_dir` when None.

    Returns:
        The manifest.

    Raises:
        ModelError: When the file is missing or not a valid manifest.
    """
    folder = Path(folder) if folder is not None else default_models_dir()
    path = folder / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"model manifest {path} is missing; {REBUILD_HINT}") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"model manifest {path} is unreadable ({e}); {REBUILD_HINT}") from None
    models: dict[str, ModelEntry] = {}
    try:
        for key, d in raw["models"].items():
            models[key] = ModelEntry(
                key=key,
                file=str(d["file"]),
                sha256=str(d["sha256"]).lower(),
                role=str(d["role"]),
                variant=None if d.get("variant") is None else str(d["variant"]),
                precision=str(d["precision"]),
                scheme=str(d.get("scheme", "")),
                inputs=tuple(TensorSpec.from_json(t) for t in d["inputs"]),
                outputs=tuple(TensorSpec.from_json(t) for t in d["outputs"]),
                raw=d,
            )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ModelError(f"model manifest {path} is malformed ({type(e).__name__}: {e}); "
                         f"{REBUILD_HINT}") from None
    return Manifest(folder=folder, models=models, raw=raw)


def verify_file(path: Path, sha256: str) -> None:
    """Checks that a model file exists and has the expected sha256.

    Raises:
        ModelError: Naming the file, both hashes and the rebuild command.
    """
    if not path.is_file():
        raise ModelError(f"model {path} is missing; {REBUILD_HINT}")
    actual = sha256_file(path)
    if actual != sha256.lower():
        raise ModelError(f"model {path}: sha256 mismatch (file {actual[:16]}..., manifest "
                         f"{sha256[:16]}...): the file is truncated or altered; {REBUILD_HINT}")


RuntimeName = Literal["ai-edge-litert", "tflite-runtime"]


def _interpreter_class() -> tuple[type[Any], RuntimeName]:
    """The Interpreter class of the best installed runtime."""
    try:
        mod = importlib.import_module("ai_edge_litert.interpreter")
        return mod.Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        mod = importlib.import_module("tflite_runtime.interpreter")
        return mod.Interpreter, "tflite-runtime"
    except ImportError:
        pass
    raise RuntimeMissingError(
        "no TFLite runtime is installed: `pip install ai-edge-litert` (preferred; fast int8, "
        "Python 3.10-3.14) or, as a slow fallback, `pip install tflite-runtime`")


def runtime_name() -> RuntimeName:
    """Which runtime :func:`create_interpreter` will use."""
    return _interpreter_class()[1]


def create_interpreter(model: Path | bytes, threads: int = 1, *, int8: bool = False,
                       preserve_all_tensors: bool = False) -> Any:
    """Creates and allocates a TFLite interpreter.

    Args:
        model: Path of a .tflite file, or its bytes.
        threads: Number of CPU threads the runtime may use (>= 1).
        int8: Whether the model holds int8 kernels (only used to warn on tflite-runtime).
        preserve_all_tensors: Keep intermediate tensors readable (slow; for model building).

    Returns:
        An allocated ``Interpreter`` of the chosen runtime.

    Raises:
        RuntimeMissingError: When no runtime is installed.
        ModelError: When the runtime rejects the model.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    cls, name = _interpreter_class()
    if int8 and name == "tflite-runtime":
        warnings.warn("running an int8 model on tflite-runtime, which has no fast int8 kernels "
                      "(10-20x slower than float); install ai-edge-litert", SlowInt8Warning,
                      stacklevel=2)
    kwargs: dict[str, Any] = {"num_threads": threads}
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
    if isinstance(model, bytes | bytearray):
        kwargs["model_content"] = bytes(model)
        label = "<bytes>"
    else:
        kwargs["model_path"] = str(model)
        label = str(model)
    try:
        interp = cls(**kwargs)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"model {label}: the runtime ({name}) cannot load it: {e}; "
                         f"{REBUILD_HINT}") from None
    return interp


class Model:
    """A verified model with named inputs and outputs.

    Use :func:`load_model` to make one. ``run`` takes and returns arrays keyed by the manifest's
    semantic tensor keys, so code does not depend on tensor order or names inside the file.
    """

    def __init__(self, entry: ModelEntry, path: Path, threads: int) -> None:
        self.entry = entry
        self.path = path
        self.threads = threads
        self.interpreter = create_interpreter(path, threads, int8=entry.precision == "int8")
        self._in = self._bind(self.interpreter.get_input_details(), entry.inputs, "input")
        self._out = self._bind(self.interpreter.get_output_details(), entry.outputs, "output")

    def _bind(self, details: Sequence[Mapping[str, Any]], specs: Sequence[TensorSpec],
              what: str) -> dict[str, tuple[int, TensorSpec]]:
        by_name = {str(d["name"]): d for d in details}
        bound: dict[str, tuple[int, TensorSpec]] = {}
        for spec in specs:
            d = by_name.get(spec.name)
            if d is None and len(specs) == 1 and len(details) == 1:
                d = details[0]
            if d is None:
                raise ModelError(
                    f"model {self.path}: {what} tensor {spec.name!r} ({spec.key}) not found; "
                    f"the file has {sorted(by_name)}; {REBUILD_HINT}")
            shape = tuple(int(s) for s in d["shape"])
            if shape != spec.shape:
                raise ModelError(
                    f"model {self.path}: {what} {spec.key!r} has shape {shape}, manifest says "
                    f"{spec.shape}; {REBUILD_HINT}")
            if np.dtype(d["dtype"]).name != spec.dtype:
                raise ModelError(
                    f"model {self.path}: {what} {spec.key!r} has dtype "
                    f"{np.dtype(d['dtype']).name}, manifest says {spec.dtype}; {REBUILD_HINT}")
            bound[spec.key] = (int(d["index"]), spec)
        return bound

    def resize_batch(self, batch: int) -> None:
        """Reallocates every input for a batch of ``batch`` (>= 1) along axis 0."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        for idx, spec in self._in.values():
            self.interpreter.resize_tensor_input(idx, (batch, *spec.shape[1:]), strict=False)
        self.interpreter.allocate_tensors()

    def run(self, inputs: Mapping[str, npt.NDArray[Any]] | npt.NDArray[Any]
            ) -> dict[str, npt.NDArray[Any]]:
        """Runs the model once.

        Args:
            inputs: One array for a single-input model, or arrays keyed by input key. Shapes must
                match the allocated input shapes (see :meth:`resize_batch`).

        Returns:
            Output arrays keyed by output key (copies, safe to keep).

        Raises:
            ValueError: When an input is missing, or its shape or dtype is wrong.
        """
        if not isinstance(inputs, Mapping):
            if len(self._in) != 1:
                raise ValueError(f"model {self.entry.key} has inputs {sorted(self._in)}; "
                                 "pass a mapping")
            inputs = {next(iter(self._in)): inputs}
        details = {int(d["index"]): d for d in self.interpreter.get_input_details()}
        for key, (idx, spec) in self._in.items():
            if key not in inputs:
                raise ValueError(f"model {self.entry.key}: input {key!r} is missing")
            x = np.asarray(inputs[key])
            want = tuple(int(s) for s in details[idx]["shape"])
            if x.shape != want:
                raise ValueError(f"model {self.entry.key}: input {key!r} must have shape {want}, "
                                 f"got {x.shape}")
            if x.dtype != np.dtype(spec.dtype):
                raise ValueError(f"model {self.entry.key}: input {key!r} must be {spec.dtype}, "
                                 f"got {x.dtype}")
            self.interpreter.set_tensor(idx, x)
        self.interpreter.invoke()
        return {key: np.array(self.interpreter.get_tensor(idx))
                for key, (idx, _) in self._out.items()}


def load_model(key: str, threads: int = 1, manifest: Manifest | None = None) -> Model:
    """Loads a model of the manifest after checking its sha256.

    Args:
        key: Manifest key, e.g. ``"detector_int8"`` or ``"landmark_full_float"``.
        threads: CPU threads for the interpreter.
        manifest: The manifest to use; :func:`load_manifest` when None.

    Returns:
        The ready model.

    Raises:
        ModelError: Missing file, sha256 mismatch, wrong tensor shapes, runtime rejection.
        RuntimeMissingError: No runtime installed.
    """
    manifest = manifest if manifest is not None else load_manifest()
    entry = manifest.entry(key)
    path = manifest.path(key)
    verify_file(path, entry.sha256)
    model = Model(entry, path, threads)
    logger.debug("loaded %s (%s, %s) with %d thread(s)", key, path.name, entry.precision, threads)
    return model
