"""The ``edge-pose`` command line.

Subcommands:
    run             run the pipeline on a source; write annotations.jsonl and annotated.mp4
                    (still images: annotated/ and coco_keypoints.json)
    demo            ``run`` on the bundled demo clip, every frame
    daemon          the device service: publish to MQTT (and HTTP) until SIGTERM
    serve           the HTTP API and live browser viewer over a source
    validate-config check a TOML config and print every error with its key path
    models list     print the model manifest (key, file, precision, size, latency)
    models verify   check every model file against its sha256 and load it
    fuse            fuse several devices' 2D poses into 3D (edge/fuse)
    calibrate       camera calibration (intrinsics from checkerboard photos)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

try:  # about 0.5 s of imports (numpy, OpenCV, scipy): Ctrl-C here is no traceback either
    from edge import __version__
    from edge.comms.events import JournalError
    from edge.config import Config, ConfigError, load_config, parse_config
    from edge.runtime import ModelError, load_manifest, load_model, runtime_name, verify_file
    from edge.sinks import SinkError
    from edge.sinks.files import JsonlSink, write_atomically
    from edge.sources import SourceError
    from edge.sources.live import quiet_video_backends
    from edge.types import path_arg
except (KeyboardInterrupt, ImportError) as e:
    # A Ctrl-C inside a compiled extension's initialisation (scipy's pybind11 modules) arrives
    # as "ImportError: initialization failed" raised from the KeyboardInterrupt.
    if isinstance(e, ImportError) and not isinstance(e.__cause__ or e.__context__,
                                                     KeyboardInterrupt):
        raise
    print("edge-pose: interrupted", file=sys.stderr)
    sys.exit(128 + signal.SIGINT)

if TYPE_CHECKING:
    from edge.app import Runtime

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


class Progress:
    """A one-line progress bar on a terminal (files only: their length is known)."""

    def __init__(self, total: int | None, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self._last = -1

    def __call__(self, done: int) -> None:
        """Shows ``done`` frames processed."""
        if not self.total or not self.stream.isatty():
            return
        pct = min(100, 100 * done // self.total)
        if pct == self._last and done != self.total:
            return
        self._last = pct
        bar = "#" * (pct * 30 // 100)
        self.stream.write(f"\r[{bar:<30}] {done}/{self.total} frames")
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def format_report(summary: dict[str, Any]) -> str:
    """The end-of-run table: frames, people, and per-stage ms and fps against budget."""
    lines = [
        f"frames processed {summary['frames_processed']} (read {summary['frames_read']}, "
        f"dropped {summary['frames_dropped']}, overrun ticks {summary['ticks_overrun']}) in "
        f"{summary['wall_s']:.1f} s = {summary['fps'] or 0:.1f} fps",
        f"people: {summary['person_frames']} person-frames, at most {summary['max_persons']} "
        "at once",
        f"{'stage':<8} {'runs':>6} {'mean ms':>8} {'p90 ms':>8} {'fps':>8} {'budget':>7} "
        f"{'x budget':>8} {'in budget':>9}",
    ]
    for name, st in summary["stages"].items():
        if not st["runs"]:
            lines.append(f"{name:<8} {0:>6}")
            continue
        budget = st["budget_fps"]
        ratio = f"{st['fps'] / budget:8.2f}" if budget and st["fps"] else f"{'':>8}"
        within = f"{100 * st['within_budget']:8.1f}%" if budget else f"{'':>9}"
        lines.append(f"{name:<8} {st['runs']:>6} {st['mean_ms']:>8.2f} {st['p90_ms']:>8.2f} "
                     f"{st['fps'] or 0:>8.1f} {budget or '':>7} {ratio} {within}")
    return "\n".join(lines)


def _override(config: Config, updates: dict[str, dict[str, Any]], origin: str) -> Config:
    """The config with command-line values put in, validated like the file (exit 2 on error)."""
    data = config.model_dump()
    for section, values in updates.items():
        data[section].update(values)
    return parse_config(data, origin)


def _serve_config(args: argparse.Namespace) -> Config:
    if args.config:
        config = load_config(args.config)
    else:
        config = parse_config({"mqtt": {"enabled": False},
                               "source": {"loop": not args.no_loop}}, "serve defaults")
    updates: dict[str, dict[str, Any]] = {"http": {}}
    if args.source is not None:
        updates["source"] = {"uri": args.source}
    if args.no_loop:
        updates.setdefault("source", {})["loop"] = False
    if args.rotate is not None:
        updates.setdefault("source", {})["rotate"] = args.rotate
    if args.threads is not None:
        updates["models"] = {"threads": args.threads}
    if args.device_id is not None:
        updates["annotation"] = {"device_id": args.device_id}
    for item in args.http:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError("command line", [(f"--http {item}", "expected KEY=VALUE")])
        try:
            updates["http"][key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:  # a bare word: a string
            updates["http"][key.strip()] = value.strip()
    if args.host is not None:
        updates["http"]["host"] = args.host
    if args.port is not None:
        updates["http"]["port"] = args.port
    return _override(config, updates, "command line")


def _run_config(args: argparse.Namespace) -> Config:
    config = load_config(args.config) if args.config else Config()
    updates: dict[str, dict[str, Any]] = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            updates.setdefault(section, {})[key] = value

    put("source", "uri", args.source)
    put("source", "rotate", getattr(args, "rotate", None))  # run only (demo has no --rotate)
    put("tracking", "max_persons", args.max_persons)
    put("tracking", "max_persons_image", args.max_persons)
    put("models", "landmark", args.model)
    put("models", "precision", args.precision)
    put("models", "threads", args.threads)
    put("scheduler", "mode", args.mode)
    put("output", "dir", args.out)
    put("annotation", "device_id", args.device_id)
    return _override(config, updates, "command line")


def run(config: Config, *, progress: bool = True, stream: TextIO | None = None) -> int:
    """Runs the pipeline as ``config`` says, writes the outputs, prints the report.

    Still images (``image`` mode, the default for an image file or a folder of images) write
    ``annotations.jsonl``, annotated images in ``annotated/`` and ``coco_keypoints.json``;
    video and live sources write ``annotations.jsonl`` and ``annotated.mp4``.

    Returns:
        0 on success, 1 when the source or an output broke mid-way (what was processed is
        kept) or when no image of a folder could be read, 128 + the signal's number when
        SIGINT or SIGTERM stopped it (130, 143; the outputs finished as at the source's end).
    """
    from edge.app import Runtime

    out = stream if stream is not None else sys.stdout
    rt = Runtime(config)
    rt.open()
    assert rt.source is not None and rt.pipeline is not None
    source = rt.source
    out_dir = config.output.dir or Path("out")
    code = 0
    try:
        rt.add_file_outputs(out_dir)
        bar = Progress(source.frame_count if not source.live and progress else None)
        with _stop_on_signals(rt) as signalled:
            code = rt.run(progress=bar)
        if signalled:
            name = signal.Signals(signalled[0]).name
            rt.stats.error = f"interrupted by {name}"
            code = 128 + signalled[0]
    finally:
        code = max(code, rt.close())
    stats = rt.stats
    summary = rt.snapshot()
    summary["models"] = rt.pipeline.core.models
    summary["source"] = source.name
    summary["threads"] = config.models.threads
    summary["tracker"] = dataclasses.asdict(rt.pipeline.core.tracker.stats)
    skipped: list[tuple[str, str]] = list(getattr(source, "skipped", []))
    if rt.mode == "image":
        summary["skipped"] = [{"file": f, "reason": r} for f, r in skipped]
    files = [str(p) for p in (getattr(o, "path", None) for o in rt.outputs) if p is not None]
    stats_path = out_dir / "stats.json"
    try:
        write_atomically(stats_path, json.dumps(summary, indent=2) + "\n")
        files.append(str(stats_path))
    except OSError as e:  # disk full, folder gone or read-only: the report still shows
        stats.error = stats.error or f"{stats_path}: cannot be written ({e.strerror or e})"
        code = max(code, 1)
    print(format_report(summary), file=out)
    print(f"wrote {', '.join(files)}", file=out)
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s):", file=out)
        for name, reason in skipped:
            print(f"  {name}: {reason}", file=out)
        if stats.frames_processed == 0:
            stats.error = stats.error or "no image could be read"
            code = 1
    if stats.error:
        inner = (getattr(o, "inner", o) for o in rt.outputs)
        jsonl = next((o for o in inner if isinstance(o, JsonlSink)), None)
        kept = stats.frames_processed if jsonl is None else min(jsonl.lines,
                                                                stats.frames_processed)
        what = (f"the annotations of the {kept} frames processed are kept"
                if kept == stats.frames_processed else
                f"the annotations of the first {kept} of the {stats.frames_processed} frames "
                "processed are kept")
        print(f"edge-pose: stopped early: {stats.error}; {what}", file=sys.stderr)
    return code


#: A repeat of the first stop signal within this many seconds is the same request, s.
SAME_SIGNAL_S = 1.0


@contextlib.contextmanager
def _stop_on_signals(rt: Runtime) -> Iterator[list[int]]:
    """SIGINT (Ctrl-C) and SIGTERM end ``rt``'s loop after the current frame, not mid-write.

    The outputs are then closed as after the source's end (the video finished, every queued
    annotation written, ``stats.json`` beside them). Without this, SIGTERM killed the process
    at once (no ``stats.json``, exit 143 with no word) and Ctrl-C raised ``KeyboardInterrupt``
    wherever the core thread was. A second signal stops at once (``KeyboardInterrupt``), but
    the same signal again within ``SAME_SIGNAL_S`` is the same request: GNU ``timeout`` sends
    its SIGTERM to the process and then to its process group, and that pair stopped the run
    with no ``stats.json`` and exit 130.

    Yields:
        The numbers of the signals received (empty when none came).
    """
    got: list[int] = []
    first = [0.0]  # time.monotonic() of the first signal

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if got:
            if signum == got[0] and time.monotonic() - first[0] < SAME_SIGNAL_S:
                return
            raise KeyboardInterrupt
        got.append(signum)
        first[0] = time.monotonic()
        rt.stop()
        print(f"edge-pose: {signal.Signals(signum).name}: stopping after the current frame "
              "(again to stop at once)", file=sys.stderr)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        # After a stop signal the handler stays to the end: the run can be over before the
        # repeat arrives (50 ms later from GNU timeout), and the default action would then
        # kill the process while it writes stats.json.
        if not got:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _validate_config(path: Path) -> int:
    from edge.preflight import preflight

    try:
        preflight(load_config(path), origin=str(path), open_source=True)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"{path}: ok")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``edge-pose``."""
    p = argparse.ArgumentParser(prog="edge-pose", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"edge-pose {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("run", "demo"):
        pr = sub.add_parser(name, help="run the pipeline on a source" if name == "run" else
                            "run the pipeline on the bundled demo clip (every frame)")
        if name == "run":
            pr.add_argument("--source", help="video, image, folder, camera index, URL, "
                            "picamera2 or demo (default: the config's)")
            pr.add_argument("--rotate", type=int, choices=[0, 90, 180, 270],
                            help="turn every frame this many degrees clockwise, as the camera "
                            "is mounted (source.rotate; default: the config's)")
        pr.add_argument("--config", type=path_arg, help="TOML config file")
        pr.add_argument("--out", type=path_arg, help="output folder (default: " + (
            "out/)" if name == "run" else "out/demo/)"))
        pr.add_argument("--device-id", help="the annotations' device_id (annotation.device_id; "
                        "default: the config's, edge-pose): one per camera, for `fuse`")
        pr.add_argument("--max-persons", type=int, help="most people at once: "
                        "tracking.max_persons and tracking.max_persons_image")
        pr.add_argument("--model", choices=["lite", "full", "heavy"])
        pr.add_argument("--precision", choices=["int8", "float"])
        pr.add_argument("--threads", type=int, help="interpreter threads per model")
        mode = pr.add_mutually_exclusive_group()
        mode.add_argument("--realtime", dest="mode", action="store_const", const="realtime",
                          help="fixed-rate ticks on the newest frame, detector in its thread")
        mode.add_argument("--every-frame", dest="mode", action="store_const",
                          const="every-frame", help="every frame, detector every k frames "
                          "(reproducible)")
        mode.add_argument("--image", dest="mode", action="store_const", const="image",
                          help="independent still images (the default for an image file or a "
                          "folder of images)")
        pr.add_argument("--no-progress", action="store_true",
                        help="no progress line on the terminal (logs, scripts)")
    pd = sub.add_parser("daemon", help="run the device service (MQTT publisher; systemd "
                        "notify and watchdog)")
    pd.add_argument("--config", type=path_arg, default=Path("/etc/edge-pose/config.toml"),
                    help="TOML config file (default: /etc/edge-pose/config.toml)")
    ps = sub.add_parser("serve", help="the HTTP API and live browser viewer over a source "
                        "(and MQTT when the config enables it)")
    ps.add_argument("--config", type=path_arg, help="TOML config file (default: built-in "
                    "defaults with MQTT off)")
    ps.add_argument("--source", help="source URI (default: the config's; demo: the clip)")
    ps.add_argument("--rotate", type=int, choices=[0, 90, 180, 270],
                    help="turn every frame this many degrees clockwise, as the camera is "
                    "mounted (source.rotate; default: the config's)")
    ps.add_argument("--host", help="address to bind (default 127.0.0.1; any other needs a "
                    "token)")
    ps.add_argument("--port", type=int, help="port (default 8080; 0: any free port)")
    ps.add_argument("--threads", type=int, help="interpreter threads per model")
    ps.add_argument("--device-id", help="the annotations' device_id (annotation.device_id; "
                    "default: the config's, edge-pose)")
    ps.add_argument("--no-loop", action="store_true", help="stop at the end of a file (default "
                    "without --config: loop it)")
    ps.add_argument("--http", action="append", default=[], metavar="KEY=VALUE",
                    help="set an [http] key, the value in TOML syntax (repeatable), e.g. "
                    "--http pose_rate_per_s=10")
    pv = sub.add_parser("validate-config", help="check a TOML config file")
    pv.add_argument("file", type=path_arg)
    pm = sub.add_parser("models", help="list or verify the shipped models")
    pm.add_argument("action", choices=["list", "verify"])
    pm.add_argument("--models-dir", type=path_arg, default=None,
                    help="folder with manifest.json (default: the shipped models)")
    from edge.fuse.cli import add_subparsers as add_fuse_subparsers

    add_fuse_subparsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edge-pose``; returns the process exit code."""
    try:
        args = build_parser().parse_args(argv)  # imports more (the fuse commands)
        level = logging.WARNING - 10 * min(int(args.verbose), 2)
        logging.basicConfig(level=level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        quiet_video_backends(debug=level <= logging.DEBUG)
        if args.command in ("run", "demo"):
            if args.command == "demo":
                args.source = "demo"
                args.mode = args.mode or "every-frame"
                args.out = args.out or Path("out/demo")
            return run(_run_config(args), progress=not args.no_progress)
        if args.command == "daemon":
            from edge.service import run_daemon

            return run_daemon(args.config)
        if args.command == "serve":
            from edge.service import run_service

            return run_service(_serve_config(args), origin=str(args.config or "serve"),
                               http=True)
        if args.command == "validate-config":
            return _validate_config(args.file)
        if args.command == "models":
            if args.action == "list":
                return _models_list(args.models_dir)
            return _models_verify(args.models_dir)
        if args.command in ("fuse", "calibrate"):
            from edge.fuse.cli import run as run_fuse

            return run_fuse(args)
    except (ModelError, ConfigError, SourceError, SinkError) as e:
        print(f"edge-pose: {e}", file=sys.stderr)
        return 2
    except JournalError as e:  # at run time (preflight catches what config can fix)
        print(f"edge-pose: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while loading (a run handles its own, after this)
        print("edge-pose: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:  # stdout closed by its reader (`edge-pose models list | head -1`)
        # Nothing more can reach the reader; point stdout at /dev/null so that the exit's
        # flush does not fail again, and end as a tool killed by SIGPIPE would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
