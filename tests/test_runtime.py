"""edge.runtime and `edge-pose models`: the shipped models load, match their manifest, and every
kind of damage gives a clear error instead of a crash in the runtime."""

from __future__ import annotations

import importlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge import cli, runtime
from edge.runtime import Manifest, ModelError, load_manifest, load_model


def _copy_models(manifest: Manifest, dst: Path) -> Path:
    """Copies the manifest and its model files to ``dst`` (so tests can damage them)."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(manifest.folder / runtime.MANIFEST_NAME, dst / runtime.MANIFEST_NAME)
    for e in manifest.models.values():
        shutil.copy(manifest.folder / e.file, dst / e.file)
    return dst


def _some_key(manifest: Manifest) -> str:
    return sorted(manifest.models)[0]


def test_manifest_lists_the_shipped_models(manifest: Manifest) -> None:
    roles = {(e.role, e.variant, e.precision) for e in manifest.models.values()}
    assert ("detector", None, "int8") in roles
    assert ("detector", None, "float") in roles
    assert any(r == "landmark" and p == "int8" for r, _, p in roles)


@pytest.mark.parametrize("threads", [1, 2])
def test_every_model_loads_matches_its_hash_and_runs(manifest: Manifest, threads: int) -> None:
    for key, entry in sorted(manifest.models.items()):
        assert runtime.sha256_file(manifest.path(key)) == entry.sha256
        model = load_model(key, threads, manifest)
        x = {t.key: np.full(t.shape, 0.5, np.float32) for t in entry.inputs}
        out = model.run(x)
        assert set(out) == {t.key for t in entry.outputs}
        for t in entry.outputs:
            assert out[t.key].shape == t.shape, (key, t.key)
            assert np.isfinite(out[t.key]).all(), (key, t.key)


def test_missing_model_file(manifest: Manifest, tmp_path: Path) -> None:
    m = load_manifest(_copy_models(manifest, tmp_path))
    key = _some_key(m)
    m.path(key).unlink()
    with pytest.raises(ModelError, match=r"is missing; rebuild with `make models`"):
        load_model(key, 1, m)


def test_validate_config_names_every_bad_model(manifest: Manifest, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """One model missing and another truncated: only the first was named, so a fix needed a
    second ``validate-config`` to learn of the other."""
    folder = _copy_models(manifest, tmp_path / "models")
    m = load_manifest(folder)
    landmark = m.find("landmark", "full", "int8")
    detector = m.find("detector", None, "int8")
    (folder / landmark.file).unlink()
    data = (folder / detector.file).read_bytes()
    (folder / detector.file).write_bytes(data[: len(data) // 2])
    config = tmp_path / "c.toml"
    config.write_text(f"[models]\ndir = {str(folder)!r}\n[mqtt]\nenabled = false\n")
    assert cli.main(["validate-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{landmark.file} is missing" in err, err
    assert detector.file in err and "sha256 mismatch" in err, err


@pytest.mark.parametrize("damage", ["truncate", "flip-one-byte", "append"])
def test_damaged_model_is_refused_before_the_runtime(manifest: Manifest, tmp_path: Path,
                                                     damage: str) -> None:
    m = load_manifest(_copy_models(manifest, tmp_path))
    for key in m.models:
        path = m.path(key)
        data = bytearray(path.read_bytes())
        if damage == "truncate":
            data = data[: len(data) // 2]
        elif damage == "flip-one-byte":
            data[len(data) // 3] ^= 0xFF
        else:
            data += b"\0" * 16
        path.write_bytes(bytes(data))
        with pytest.raises(ModelError, match=r"sha256 mismatch.*rebuild with `make models`"):
            load_model(key, 1, m)


def test_corrupt_model_with_a_matching_hash_gives_a_clear_error(manifest: Manifest,
                                                               tmp_path: Path) -> None:
    """A garbage file whose manifest was updated to match: the runtime's refusal is wrapped."""
    folder = _copy_models(manifest, tmp_path)
    raw = json.loads((folder / runtime.MANIFEST_NAME).read_text())
    key = _some_key(manifest)
    path = folder / raw["models"][key]["file"]
    path.write_bytes(manifest.path(key).read_bytes()[:4096])
    raw["models"][key]["sha256"] = runtime.sha256_file(path)
    (folder / runtime.MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=r"cannot load it"):
        load_model(key, 1, load_manifest(folder))


def test_wrong_tensor_shape_in_manifest(manifest: Manifest, tmp_path: Path) -> None:
    folder = _copy_models(manifest, tmp_path)
    raw = json.loads((folder / runtime.MANIFEST_NAME).read_text())
    key = _some_key(manifest)
    raw["models"][key]["inputs"][0]["shape"] = [1, 99, 99, 3]
    (folder / runtime.MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=r"has shape .* manifest says \(1, 99, 99, 3\)"):
        load_model(key, 1, load_manifest(folder))


@pytest.mark.parametrize("text", ["", "{", '{"models": {"x": {"file": 1}}}', "[]"])
def test_malformed_manifest(tmp_path: Path, text: str) -> None:
    (tmp_path / runtime.MANIFEST_NAME).write_text(text)
    with pytest.raises(ModelError, match=r"manifest .* (unreadable|malformed)"):
        load_manifest(tmp_path)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"manifest .* is missing; rebuild"):
        load_manifest(tmp_path)


def test_unknown_key_lists_the_known_ones(manifest: Manifest) -> None:
    with pytest.raises(ModelError, match=r"not in .*known: .*detector_float"):
        manifest.entry("nope")


def test_wrong_input_shape_and_dtype(manifest: Manifest) -> None:
    e = next(e for e in manifest.models.values() if e.role == "detector")
    model = load_model(e.key, 1, manifest)
    with pytest.raises(ValueError, match=r"shape \(1, 224, 224, 3\), got \(1, 10, 10, 3\)"):
        model.run(np.zeros((1, 10, 10, 3), np.float32))
    with pytest.raises(ValueError, match=r"must be float32, got uint8"):
        model.run(np.zeros((1, 224, 224, 3), np.uint8))


def test_batch_resize_runs_n_inputs_at_once(manifest: Manifest) -> None:
    e = next(e for e in manifest.models.values() if e.role == "landmark")
    model = load_model(e.key, 1, manifest)
    rng = np.random.default_rng(0)
    x = rng.random((3, *e.inputs[0].shape[1:]), dtype=np.float32)
    singles = [model.run(x[i : i + 1]) for i in range(3)]
    model.resize_batch(3)
    batched = model.run(x)
    for i in range(3):
        for k in singles[i]:
            np.testing.assert_allclose(batched[k][i], singles[i][k][0], atol=1e-3, rtol=1e-3)


def test_no_runtime_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seam: the import of both runtimes fails, as on a machine with neither installed."""
    real_import = importlib.import_module

    def no_tflite(name: str, package: str | None = None) -> Any:
        if name.startswith(("ai_edge_litert", "tflite_runtime")):
            raise ImportError(name)
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", no_tflite)
    with pytest.raises(runtime.RuntimeMissingError, match=r"pip install ai-edge-litert"):
        runtime.create_interpreter(b"", 1)


def test_tflite_runtime_fallback_warns_for_int8(manifest: Manifest,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Seam: only `tflite_runtime` importable. Its Interpreter has the same API as ai-edge-litert's,
    which stands in for it here (tflite-runtime has no wheel for numpy 2)."""
    real_import = importlib.import_module

    def only_tflite_runtime(name: str, package: str | None = None) -> Any:
        if name.startswith("ai_edge_litert"):
            raise ImportError(name)
        if name == "tflite_runtime.interpreter":
            return real_import("ai_edge_litert.interpreter")
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", only_tflite_runtime)
    assert runtime.runtime_name() == "tflite-runtime"
    key = next(k for k, e in manifest.models.items() if e.precision == "int8")
    with pytest.warns(runtime.SlowInt8Warning, match=r"10-20x slower"):
        load_model(key, 1, manifest)
    fkey = next(k for k, e in manifest.models.items() if e.precision == "float")
    with warnings.catch_warnings():
        warnings.simplefilter("error", runtime.SlowInt8Warning)
        load_model(fkey, 1, manifest)


def test_cli_models_list_and_verify(manifest: Manifest, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "list", "--models-dir", str(manifest.folder)]) == 0
    listed = capsys.readouterr().out
    for key in manifest.models:
        assert key in listed
    assert cli.main(["models", "verify", "--models-dir", str(manifest.folder)]) == 0
    out = capsys.readouterr().out
    assert f"{len(manifest.models)} ok, 0 failed" in out

    folder = _copy_models(manifest, tmp_path)
    bad = folder / manifest.entry(_some_key(manifest)).file
    bad.write_bytes(bad.read_bytes()[:100])
    assert cli.main(["models", "verify", "--models-dir", str(folder)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {_some_key(manifest)}" in out and "sha256 mismatch" in out
    assert f"{len(manifest.models) - 1} ok, 1 failed" in out


def test_cli_reports_a_missing_manifest(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "verify", "--models-dir", str(tmp_path)]) == 2
    assert "manifest" in capsys.readouterr().err
