"""Puts the shipped lifter into ``models/``: merges its manifest entry, removes the others.

``python -m lifter.build`` writes four lifters (single and temporal, float and int8) and their
entries to ``lifter/manifest_lifter.json``. The int8 builds ship: ``lifter_single_int8`` (the
default 3D stage, and the temporal lifter's fallback for the first frames of a track) and
``lifter_temporal_int8`` (``models.lifter = "temporal"``). The float ones are 4x larger and are
needed only to check the int8 builds' fidelity; they stay in ``cache/lifter/models/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("lifter_single_int8", "lifter_temporal_int8")


def ship(models: Path, fragment: Path, keys: tuple[str, ...] = SHIPPED) -> list[str]:
    """Merges ``keys`` of ``fragment`` into ``models/manifest.json``; deletes other lifters.

    Args:
        models: The models folder (holds ``manifest.json`` and the lifter files).
        fragment: ``lifter/manifest_lifter.json``.
        keys: Lifter entries to ship.

    Returns:
        The files removed from ``models``.
    """
    manifest_path = models / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    built = json.loads(fragment.read_text(encoding="utf-8"))["models"]
    for key in [k for k, e in manifest["models"].items() if e["role"] == "lifter"]:
        del manifest["models"][key]
    for key in keys:
        manifest["models"][key] = built[key]
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    removed = []
    for key, entry in built.items():
        path = models / entry["file"]
        if key not in keys and path.exists():
            path.unlink()
            removed.append(path.name)
    return removed


def main() -> int:
    """Command line: ``python -m lifter.ship [--models DIR] [--fragment FILE]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--fragment", type=Path, default=ROOT / "lifter" / "manifest_lifter.json")
    args = ap.parse_args()
    removed = ship(args.models, args.fragment)
    print(f"shipped {', '.join(SHIPPED)}; removed {', '.join(removed) or 'nothing'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
