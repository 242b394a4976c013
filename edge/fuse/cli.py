"""``edge-pose fuse`` and ``edge-pose calibrate``: the command-line plumbing.

``edge-pose fuse --jsonl cam1.jsonl cam2.jsonl ... --calib Calib.toml [--devices dev=cam,...]
--out fused.jsonl`` fuses annotation files offline (identical output on rerun);
``edge-pose fuse --config fuse.toml`` runs the live service (edge/fuse/service.py).
``edge-pose calibrate intrinsics --images DIR --pattern 9x6 --square-mm 25 --out cam.yaml``
runs OpenCV's checkerboard calibration.

Errors the user can fix (missing files, a bad calibration, a device map that does not fit)
print one line naming the thing and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge.fuse.calib import Calibration, CalibrationError, read_calibration
from edge.types import path_arg


class UsageError(ValueError):
    """A command-line value that does not fit (exit 2)."""


def add_subparsers(sub: Any) -> None:
    """Adds ``fuse`` and ``calibrate`` to ``edge-pose``'s subcommands.

    Args:
        sub: The ``argparse`` subparsers action of ``edge-pose``.
    """
    pf = sub.add_parser("fuse", help="fuse several devices' 2D poses into 3D (offline from "
                        "annotations.jsonl files, or live with --config)")
    pf.add_argument("--jsonl", type=path_arg, nargs="+", metavar="FILE",
                    help="one annotations.jsonl per device (offline)")
    pf.add_argument("--calib", type=path_arg, help="calibration: Pose2Sim Calib.toml, Qualisys "
                    ".qca.txt or OpenCV .yaml")
    pf.add_argument("--devices", help="device=camera pairs, comma separated (default: the "
                    "files' devices in file order = the calibration's cameras in file order)")
    pf.add_argument("--offsets", help="device=seconds pairs, comma separated: added to the "
                    "device's capture times (cameras started apart)")
    pf.add_argument("--rotate", help="device=degrees pairs, comma separated: a device's "
                    "source.rotate (90, 180, 270; its camera's model is turned to match)")
    pf.add_argument("--out", type=path_arg, help="fused JSONL output (offline)")
    pf.add_argument("--config", type=path_arg, help="TOML config of the live fuse service")
    pf.add_argument("--validate", action="store_true", help="with --config: check the config "
                    "and its calibration, print every error, and exit")
    pc = sub.add_parser("calibrate", help="camera calibration tools")
    pc.add_argument("action", choices=["intrinsics"])
    pc.add_argument("--images", type=path_arg, required=True,
                    help="folder of checkerboard photos of one camera")
    pc.add_argument("--pattern", default="9x6",
                    help="inner corners per row x per column (default 9x6)")
    pc.add_argument("--square-mm", type=float, default=25.0,
                    help="checkerboard square size, mm (default 25)")
    pc.add_argument("--out", type=path_arg, required=True, help="OpenCV YAML to write")


def run(args: argparse.Namespace) -> int:
    """Runs ``fuse`` or ``calibrate`` as parsed; returns the exit code."""
    if args.command == "calibrate":
        return run_calibrate(args)
    if args.config is not None:
        from edge.fuse.service import run_live

        return run_live(args.config, validate=args.validate)
    return run_offline(args)


def parse_devices(text: str, calib: Calibration) -> dict[str, str]:
    """``"a=cam01,b=cam02"`` -> ``{"a": "cam01", "b": "cam02"}``, checked against ``calib``.

    Raises:
        UsageError: A malformed pair, a repeated device or camera, or an unknown camera.
    """
    out: dict[str, str] = {}
    for item in text.split(","):
        dev, eq, cam = (s.strip() for s in item.partition("="))
        if not eq or not dev or not cam:
            raise UsageError(f"--devices: {item!r} is not DEVICE=CAMERA")
        if dev in out:
            raise UsageError(f"--devices: device {dev} given twice")
        if cam not in calib.cameras:
            raise UsageError(f"--devices: camera {cam!r} is not in {calib.source} "
                             f"(cameras: {', '.join(calib.cameras)})")
        out[dev] = cam
    cams = list(out.values())
    dup = sorted({c for c in cams if cams.count(c) > 1})
    if dup:
        raise UsageError(f"--devices: camera(s) {', '.join(dup)} given to several devices")
    return out


def _device_pairs(text: str, devices: dict[str, str], option: str, unit: str
                  ) -> list[tuple[str, str]]:
    """``"cam01=a,cam03=b"`` -> ``[("cam01", "a"), ("cam03", "b")]``, the values unparsed.

    Raises:
        UsageError: A pair without ``=`` or naming a device the scene does not have.
    """
    pairs = []
    for item in text.split(","):
        dev, eq, val = (x.strip() for x in item.partition("="))
        if not eq or dev not in devices:
            raise UsageError(f"{option}: {item!r} is not DEVICE={unit} for a device of "
                             f"this scene ({', '.join(devices)})")
        pairs.append((dev, val))
    return pairs


def parse_offsets(text: str, devices: dict[str, str]) -> dict[str, float]:
    """``"cam01=-0.067,cam03=0.067"`` -> ``{"cam01": -0.067, "cam03": 0.067}``.

    Raises:
        UsageError: A malformed pair, an unknown device or a value that is not a number.
    """
    out: dict[str, float] = {}
    for dev, val in _device_pairs(text, devices, "--offsets", "SECONDS"):
        try:
            out[dev] = float(val)
        except ValueError:
            raise UsageError(f"--offsets: {val!r} is not a number of seconds") from None
        if not abs(out[dev]) < 3600:
            raise UsageError(f"--offsets: {val!r} is not a finite offset under an hour")
    return out


def parse_rotate(text: str, devices: dict[str, str]) -> dict[str, int]:
    """``"cam02=90,cam04=180"`` -> ``{"cam02": 90, "cam04": 180}`` (the devices' turns).

    Raises:
        UsageError: A malformed pair, an unknown device or another angle.
    """
    out: dict[str, int] = {}
    for dev, val in _device_pairs(text, devices, "--rotate", "DEGREES"):
        if val not in ("0", "90", "180", "270"):
            raise UsageError(f"--rotate: {val!r} is not 0, 90, 180 or 270 (the device's "
                             "source.rotate)")
        out[dev] = int(val)
    return out


def _file_device(path: Path) -> str:
    """The device ID of the first readable line of an annotations file."""
    from edge.fuse.views import PayloadError, parse_annotation

    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                try:
                    return parse_annotation(line).device
                except PayloadError:
                    continue
    raise UsageError(f"{path}: no readable annotation line")


def default_devices(paths: list[Path], calib: Calibration) -> dict[str, str]:
    """Device of each file -> the calibration's camera of the same position.

    Raises:
        UsageError: More files than cameras, or two files of one device.
    """
    if len(paths) > len(calib):
        raise UsageError(f"{len(paths)} files but {calib.source} has {len(calib)} cameras; "
                         "give --devices")
    out: dict[str, str] = {}
    for path, cam in zip(paths, calib.names, strict=False):
        dev = _file_device(path)
        if dev in out:
            raise UsageError(f"{path}: device {dev} is also another file's device; give each "
                             "device its own file, or --devices (each camera's run needs its "
                             "own device_id: `edge-pose run --device-id cam01 ...` or "
                             "[annotation] device_id; `edge-pose` is every run's default)")
        out[dev] = cam
    return out


def run_offline(args: argparse.Namespace) -> int:
    """``edge-pose fuse --jsonl ... --calib ... --out ...``; returns the exit code."""
    from edge.fuse.offline import OfflineReport, fuse_jsonl

    try:
        if not args.jsonl or args.calib is None or args.out is None:
            raise UsageError("offline fusion needs --jsonl FILE..., --calib FILE and --out "
                             "FILE (or --config for the live service)")
        for p in args.jsonl:
            if not p.is_file():
                raise UsageError(f"--jsonl {p}: no such file")
        calib = read_calibration(args.calib)
        devices = (parse_devices(args.devices, calib) if args.devices
                   else default_devices(list(args.jsonl), calib))
        if len(devices) < 2:  # ran, wrote nothing and blamed the clocks
            raise UsageError(f"fusion needs at least two views; {len(args.jsonl)} file(s) give "
                             f"{len(devices)} device(s): {', '.join(devices) or 'none'}")
        offsets = parse_offsets(args.offsets, devices) if args.offsets else None
        if args.rotate:
            turns = parse_rotate(args.rotate, devices)
            calib = calib.turned({devices[d]: deg for d, deg in turns.items()})
        if args.out.is_dir():
            raise UsageError(f"--out {args.out} is a folder; give the file to write")
        inputs = {p.resolve() for p in [*args.jsonl, args.calib]}
        if args.out.resolve() in inputs:  # the rename at the end would replace an input
            raise UsageError(f"--out {args.out} is one of the inputs; write elsewhere")
        report = OfflineReport()
        n_frames = n_people = 0
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".part")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                for fused in fuse_jsonl(args.jsonl, calib, devices, report=report,
                                        offsets_s=offsets):
                    f.write(json.dumps(fused.to_json(), separators=(",", ":")) + "\n")
                    n_frames += 1
                    n_people += len(fused.persons)
            tmp.replace(args.out)
        except BaseException:  # a full disk, Ctrl-C: no half-written .part is left behind
            tmp.unlink(missing_ok=True)
            raise
    except (UsageError, CalibrationError, OSError) as e:
        print(f"edge-pose fuse: {e}", file=sys.stderr)
        return 2
    print(f"fused {n_frames} frame groups, {n_people} person-frames "
          f"({', '.join(f'{d}={c}' for d, c in devices.items())}); wrote {args.out}")
    for path, line, reason in report.bad_lines:
        print(f"  skipped {path}:{line}: {reason}", file=sys.stderr)
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    """``edge-pose calibrate intrinsics``; returns the exit code."""
    from edge.fuse.intrinsics import IntrinsicsError, calibrate_intrinsics, parse_pattern

    try:
        result = calibrate_intrinsics(args.images, parse_pattern(args.pattern),
                                      args.square_mm, args.out)
    except IntrinsicsError as e:
        print(f"edge-pose calibrate: {e}", file=sys.stderr)
        return 2
    print(f"calibrated {result.camera.size[0]}x{result.camera.size[1]} px from "
          f"{len(result.used)} of {len(result.used) + len(result.rejected)} images: RMS "
          f"reprojection error {result.rms_px:.3f} px; wrote {args.out}")
    for name in result.rejected:
        print(f"  no checkerboard found in {name}", file=sys.stderr)
    return 0
