"""The ``edge-pose`` command line.

Subcommands:
    models list     print the model manifest (key, file, precision, size, latency)
    models verify   check every model file against its sha256 and load it
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from edge import __version__
from edge.runtime import ModelError, load_manifest, load_model, runtime_name, verify_file

logger = logging.getLogger(__name__)


def _models_list(models_dir: Path | None) -> int:
    manifest = load_manifest(models_dir)
    print(f"models in {manifest.folder} (runtime: {_runtime_or_none()})")
    header = (f"{'key':<22} {'file':<30} {'precision':<9} {'MB':>6} {'ms@1t':>7} {'ms@2t':>7}"
              "  scheme")
    print(header)
    print("-" * len(header))
    for key, e in sorted(manifest.models.items()):
        path = manifest.folder / e.file
        size = path.stat().st_size / 1e6 if path.is_file() else float("nan")
        lat = e.raw.get("latency_ms") or {}
        t1, t2 = lat.get("threads_1"), lat.get("threads_2")
        f1 = f"{t1:7.2f}" if isinstance(t1, int | float) else f"{'-':>7}"
        f2 = f"{t2:7.2f}" if isinstance(t2, int | float) else f"{'-':>7}"
        print(f"{key:<22} {e.file:<30} {e.precision:<9} {size:6.2f} {f1} {f2}  {e.scheme[:60]}")
    return 0


def _runtime_or_none() -> str:
    try:
        return runtime_name()
    except ModelError:
        return "none installed"


def _models_verify(models_dir: Path | None) -> int:
    manifest = load_manifest(models_dir)
    failed = 0
    for key, e in sorted(manifest.models.items()):
        try:
            verify_file(manifest.folder / e.file, e.sha256)
            load_model(key, 1, manifest)
        except ModelError as err:
            failed += 1
            print(f"FAIL {key}: {err}")
        else:
            print(f"ok   {key}: {e.file} sha256 {e.sha256[:16]}... loads and matches its manifest")
    print(f"{len(manifest.models) - failed} ok, {failed} failed")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``edge-pose``."""
    p = argparse.ArgumentParser(prog="edge-pose", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"edge-pose {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = p.add_subparsers(dest="command", required=True)
    pm = sub.add_parser("models", help="list or verify the shipped models")
    pm.add_argument("action", choices=["list", "verify"])
    pm.add_argument("--models-dir", type=Path, default=None,
                    help="folder with manifest.json (default: the shipped models)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edge-pose``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(int(args.verbose), 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "models":
            if args.action == "list":
                return _models_list(args.models_dir)
            return _models_verify(args.models_dir)
    except ModelError as e:
        print(f"edge-pose: {e}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
