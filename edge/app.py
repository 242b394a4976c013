"""The Runtime: the one assembly of edge-pose, used by ``run``, ``demo``, ``daemon`` and ``serve``.

A :class:`Runtime` is built from the validated config and holds every part of a process:

* the **source**, and the **run mode** it implies (``image`` for still images, ``every-frame``,
  ``realtime``; see :func:`edge.pipeline.resolve_mode`);
* the **pipeline** (detector and core) and the **controls** that commands change
  (``enabled``, ``max_persons``, ``detector_hz``), applied between frames by
  :class:`ControlledCore` on the core's thread;
* the **stats**, owned by the scheduler (:class:`edge.scheduler.RunStats`), of which anyone
  reads a consistent :meth:`Runtime.snapshot`;
* the **transports**: file outputs (each on its own thread behind a bounded queue,
  :class:`~edge.sinks.queued.QueuedSink`; the annotated video in a process of its own fed
  through shared memory, :class:`~edge.sinks.video_process.VideoProcessSink`), MQTT and HTTP,
  which receive every annotation, and
  event listeners (MQTT's durable queue, HTTP's event stream).

Start order (:meth:`Runtime.open`): source, then models, then core; transports are added after.
Stop order (:meth:`Runtime.close`): the loop has stopped; transports are closed in reverse order
of addition (queued frames written); the source is closed last. Nothing a transport does runs
on the core's thread except enqueueing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.annotation import Annotation
from edge.comms.commands import Controls
from edge.comms.events import EventFilter
from edge.config import Config
from edge.pipeline import Pipeline, PoseCore, RunMode, StepResult, build_pipeline, resolve_mode
from edge.scheduler import RunStats, run_every_frame, run_images, run_realtime
from edge.sinks import (
    CocoKeypointsSink,
    ImagesSink,
    JsonlSink,
    Sink,
    SinkError,
    StdoutSink,
)
from edge.sinks.queued import QueuedSink
from edge.sinks.video import VideoCodec, choose_codec
from edge.sinks.video_process import VideoProcessSink
from edge.sources import (
    ImageFolderSource,
    Source,
    SourceError,
    VideoFileSource,
    open_source,
)
from edge.types import Detections, DetectorResult, Frame

logger = logging.getLogger(__name__)

#: Pixels a queued file output may hold (8 frames of 1768x994 BGR are 42 MB; 4K frames would
#: be 199 MB without this bound).
OUTPUT_QUEUE_BYTES = 64 << 20

#: Niceness added to a queued output's thread in realtime runs (see Runtime.add_output).
OUTPUT_NICE = 10

#: Niceness added to the annotated video's process in every-frame runs: the least that keeps it
#: below the core, since the core waits for it when its ring is full and a starved writer only
#: lengthens the run on a busy machine (bench/results/writer_cost_process.json).
VIDEO_NICE_EVERY_FRAME = 1

#: Receives the published events of one tick (payloads without ``seq``/``stream``).
EventListener = Callable[[list[dict[str, Any]]], None]


class ControlledCore:
    """The pipeline's core with the run-time controls and event publishing around it.

    Called only from the scheduler's core thread. Before each step it applies a changed
    ``max_persons`` (tracks above a lower limit are kept until they leave, no new ones are
    opened) and ``enabled`` (disabling announces every shown track as ``left`` and resets the
    core; while disabled the core runs with no tracks, which is cheap, and the transports are
    told nothing is shown). After each step it turns the tracker's events into published
    events (:class:`~edge.comms.events.EventFilter`) and hands them to the listeners.

    Args:
        core: The pipeline's core.
        controls: The shared settings.
        device_id: For the event payloads.
        events: Whether tracker events are published (not for still images, which have no
            before and after).
    """

    def __init__(self, core: PoseCore, controls: Controls, device_id: str,
                 events: bool = True) -> None:
        self.core = core
        self.controls = controls
        self.filter = EventFilter(device_id)
        self.publish_events = events
        self.listeners: list[EventListener] = []
        self._enabled = True
        self.people = 0

    def emit(self, payloads: list[dict[str, Any]]) -> None:
        """Hands event payloads to every listener (core thread)."""
        if not payloads:
            return
        for listener in self.listeners:
            listener(payloads)

    def reset(self) -> None:
        """Forgets every track (the next image or a restart of processing)."""
        self.core.reset()
        self.filter.reset()

    def step(self, frame: Frame, detected: DetectorResult | None) -> StepResult:
        """Applies the controls, runs the core on ``frame``, publishes the events."""
        c = self.controls.snapshot()
        tracker = self.core.tracker
        if c["max_persons"] != tracker.config.max_persons:
            tracker.set_max_persons(c["max_persons"])
            logger.info("max_persons is now %d", c["max_persons"])
        if c["enabled"] != self._enabled:
            self._enabled = c["enabled"]
            logger.info("processing %s", "enabled" if self._enabled else "disabled")
            if not self._enabled:
                if self.publish_events:
                    self.emit(self.filter.leave_all(frame))
                self.reset()
        if not self._enabled:
            detected = None
        result = self.core.step(frame, detected)
        self.people = result.annotation.n_persons
        if self._enabled and self.publish_events:
            self.emit(self.filter.update(frame, result.annotation, result.events))
        return result


class DetectorGate:
    """The detector as the realtime scheduler's detector thread sees it, paced by the controls.

    The scheduler runs its detector thread at the tick rate; each call waits here until
    ``1 / detector_hz`` has passed since the previous run (re-read while waiting, so a command
    takes effect at once), then runs the detector on the newest frame the core has seen or the
    one it was given, whichever is newer. While disabled it returns no detections.

    Args:
        pipeline: Runs the detector.
        controls: ``enabled`` and ``detector_hz``.
        stop: Ends the waiting.
    """

    def __init__(self, pipeline: Pipeline, controls: Controls, stop: threading.Event) -> None:
        self.pipeline = pipeline
        self.controls = controls
        self.stop = stop
        self.newest: Frame | None = None
        self._last = -float("inf")

    def __call__(self, frame: Frame) -> DetectorResult:
        """Runs the detector when its period has passed (see the class docstring)."""
        while not self.stop.is_set():
            if not self.controls.get("enabled"):
                self.stop.wait(0.2)
                return DetectorResult(Detections.empty(), frame.frame_id,
                                      frame.t_capture_ns / 1e9, 0.0)
            wait = self._last + 1.0 / self.controls.get("detector_hz") - time.monotonic()
            if wait <= 0:
                break
            self.stop.wait(min(wait, 0.1))
        newest = self.newest
        if newest is not None and newest.frame_id > frame.frame_id:
            frame = newest
        self._last = time.monotonic()
        return self.pipeline.detect(frame)


def _check_stills_mode(source: Source, mode: str) -> None:
    """Refuses one still image in a video mode; warns for a folder of them.

    In ``realtime`` and ``every-frame`` a new person is published once seen in a second frame
    (``tracking.confirm_ticks``): one photo, or the example config's ``mode = "realtime"``
    over a folder of photos, ran, found nobody and exited 0. A folder may be a video's frames
    (an image sequence), which those modes are for: a warning, not an error.

    Raises:
        SourceError: One image in a video mode, naming ``scheduler.mode``.
    """
    if not isinstance(source, ImageFolderSource) or mode == "image":
        return
    if source.frame_count == 1:
        raise SourceError(
            f"image {source.path}: one still in scheduler.mode = {mode!r} finds nobody (a "
            "person is published once seen in a second frame); use mode \"auto\" or "
            "\"image\" (--image)")
    logger.warning("folder %s: %d images in scheduler.mode = %r: read as a video's frames in "
                   "order (tracked across images, published from a person's second frame); "
                   "for separate photos use mode \"auto\" or \"image\" (--image)",
                   source.path, source.frame_count, mode)


class Runtime:
    """Source, scheduler, core and transports of one process (see the module docstring).

    Args:
        config: The validated configuration.
        timings: Whether annotations carry per-stage timings; None: only in realtime mode
            (every-frame and image outputs stay byte-identical across reruns).
    """

    def __init__(self, config: Config, *, timings: bool | None = None) -> None:
        self.config = config
        sc = config.scheduler
        self.stop_event = threading.Event()
        self.controls = Controls(enabled=True, max_persons=config.tracking.max_persons,
                                 detector_hz=min(sc.detector_hz, sc.rate_hz),
                                 detector_hz_max=sc.rate_hz)
        self.stats = RunStats.with_budgets(sc.budget_detector_fps, sc.budget_pose2d_fps,
                                           sc.budget_pose3d_fps)
        self._timings = timings
        self.source: Source | None = None
        self.pipeline: Pipeline | None = None
        self.core: ControlledCore | None = None
        self.mode: RunMode = "realtime"
        self.outputs: list[Sink] = []
        self._queued: list[QueuedSink | VideoProcessSink] = []
        #: Niceness added to queued outputs' threads; None: ``OUTPUT_NICE`` in realtime runs,
        #: 0 otherwise (see :meth:`add_output`).
        self.output_nice: int | None = None
        #: Called from the core loop after every tick, with or without a frame (watchdog).
        self.on_tick: list[Callable[[], None]] = []
        #: Called from the reader thread when a live source is lost or back.
        self.on_source: list[Callable[[str, str | None], None]] = []
        self._closed = False

    # ------------------------------------------------------------------ start

    def open(self) -> None:
        """Opens the source and loads the models (in that order).

        Raises:
            edge.sources.SourceError: The source cannot be opened.
            edge.runtime.ModelError: A model is missing or damaged.
        """
        src = self.config.source
        self.source = open_source(src.uri, width=src.width, height=src.height, fps=src.fps,
                                  loop=src.loop, reconnect_initial_s=src.reconnect_initial_s,
                                  reconnect_max_s=src.reconnect_max_s, rotate=src.rotate,
                                  mirror=src.mirror, stall_timeout_s=src.stall_timeout_s)
        try:
            self.mode = resolve_mode(self.config, isinstance(self.source, ImageFolderSource))
            _check_stills_mode(self.source, self.mode)
            if self.mode == "image":  # a still's own limit (``set/max_persons`` changes it)
                self.controls.max_persons = self.config.tracking.max_persons_image
            timings = self.mode == "realtime" if self._timings is None else self._timings
            self.pipeline = build_pipeline(self.config, timings=timings, mode=self.mode)
        except BaseException:
            self.source.close()
            self.source = None
            raise
        self.core = ControlledCore(self.pipeline.core, self.controls,
                                   self.config.annotation.device_id,
                                   events=self.mode != "image")

    def add_output(self, sink: Sink, *, name: str | None = None, queued: bool = True) -> None:
        """Adds a transport that receives every annotation.

        Args:
            sink: The transport.
            name: For logs and the snapshot's ``outputs``.
            queued: Run it on its own thread behind a bounded queue (lossless in every-frame
                and image runs, drop-oldest in realtime); False for a transport that never
                blocks by itself (MQTT queues in paho, HTTP in its own clients' queues).

        The queue holds at most 8 frames and ``OUTPUT_QUEUE_BYTES`` of pixels. In realtime
        runs the output's thread also runs ``OUTPUT_NICE`` steps nicer than the core, so that
        on a busy CPU its drawing and encoding cost its own frames (dropped, counted), not the
        core's rate. Not in every-frame and image runs: there the core waits for a full queue
        anyway (nothing may be lost), and a starved writer would only lengthen the run when
        other processes load the machine.
        """
        if queued:
            realtime = self.mode == "realtime"
            q = QueuedSink(sink, lossless=not realtime, name=name or type(sink).__name__,
                           max_bytes=OUTPUT_QUEUE_BYTES,
                           nice=(OUTPUT_NICE if realtime else 0) if self.output_nice is None
                           else self.output_nice)
            self._queued.append(q)
            sink = q
        self.outputs.append(sink)

    def add_video_output(self, path: Path, fps: float, codec: VideoCodec) -> None:
        """Adds the annotated video, drawn and encoded by a process of its own.

        The core thread only copies each frame into a shared-memory ring (bounded by
        ``OUTPUT_QUEUE_BYTES``; lossless in every-frame runs, drop-oldest in realtime runs;
        :class:`~edge.sinks.video_process.VideoProcessSink`). The process runs ``OUTPUT_NICE``
        steps nicer than the core in realtime runs and ``VIDEO_NICE_EVERY_FRAME`` in every-frame
        runs (``output_nice`` overrides both; at least 1).
        """
        realtime = self.mode == "realtime"
        nice = self.output_nice
        if nice is None:
            nice = OUTPUT_NICE if realtime else VIDEO_NICE_EVERY_FRAME
        sink = VideoProcessSink(path, fps, codec, lossless=not realtime,
                                max_bytes=OUTPUT_QUEUE_BYTES, nice=max(1, nice),
                                name="VideoSink")
        self._queued.append(sink)
        self.add_output(sink, queued=False)

    def add_file_outputs(self, out_dir: Path) -> None:
        """Adds the config's file outputs, written into ``out_dir``.

        ``annotations.jsonl``; the annotated video (video and live modes) or the annotated
        images and ``coco_keypoints.json`` (image mode); stdout.
        """
        self._refuse_overwriting_the_source(out_dir)
        oc, sc = self.config.output, self.config.scheduler
        if oc.jsonl:
            self.add_output(JsonlSink(out_dir / "annotations.jsonl"))
        if self.mode == "image":
            if oc.images:
                self.add_output(ImagesSink(out_dir / "annotated"))
            if oc.coco:
                self.add_output(CocoKeypointsSink(out_dir / "coco_keypoints.json"))
        elif oc.video:
            fps = self.source.fps if self.source is not None and self.source.fps else sc.rate_hz
            codec = choose_codec(oc.video_codec, realtime=self.mode == "realtime")
            self.add_video_output(out_dir / "annotated.mp4", fps, codec)
        if oc.stdout:
            self.add_output(StdoutSink())

    def _refuse_overwriting_the_source(self, out_dir: Path) -> None:
        """Refuses outputs in ``out_dir`` that would overwrite the source being read.

        ``run --source out/annotated.mp4 --out out`` truncated the video it was reading (20
        of its 230 frames read, the rest lost), and ``--source out/annotated --out out``
        would draw over the photos themselves.

        Raises:
            SinkError: Naming the output and the source.
        """
        src = self.source
        if isinstance(src, VideoFileSource) and not src.remote:
            video = src.path.resolve()
            for name in ("annotations.jsonl", "annotated.mp4", "coco_keypoints.json",
                         "stats.json"):
                if (out_dir / name).resolve() == video:
                    raise SinkError(f"output {out_dir / name} is the source video {src.path}: "
                                    "it would be overwritten; choose another --out "
                                    "(output.dir)")
        elif (isinstance(src, ImageFolderSource)
              and (out_dir / "annotated").resolve() == src.root.resolve()):
            raise SinkError(f"output folder {out_dir / 'annotated'} is the source's folder "
                            f"{src.root}: its images would be drawn over; choose another "
                            "--out (output.dir)")

    # ------------------------------------------------------------------ run

    def run(self, progress: Callable[[int], None] | None = None,
            on_step: Callable[[Frame, StepResult], None] | None = None) -> int:
        """Runs the scheduler loop of the mode until the source ends or :meth:`stop`.

        Args:
            progress: Called with the frames processed so far (files and images).
            on_step: Called after each processed frame from the core loop.

        Returns:
            0 when the source ended or the run was stopped, 1 when the source or an output
            broke (``stats.error`` says why; what was processed is kept).
        """
        if self.source is None or self.pipeline is None or self.core is None:
            raise RuntimeError("Runtime.open() first")
        source, pipeline, core, stats = self.source, self.pipeline, self.core, self.stats
        sc = self.config.scheduler
        gate = DetectorGate(pipeline, self.controls, self.stop_event)

        def step(frame: Frame, result: StepResult) -> None:
            gate.newest = frame
            for f in self.on_tick:
                f()
            if on_step is not None:
                on_step(frame, result)

        def idle() -> None:
            for f in self.on_tick:
                f()

        def source_state(state: str, why: str | None) -> None:
            for f in self.on_source:
                f(state, why)

        try:
            if self.mode == "image":
                run_images(source, core, pipeline.detect, self.outputs, stats,
                           stop=self.stop_event, progress=progress, on_step=step)
            elif self.mode == "every-frame":
                run_every_frame(source, core, pipeline.detect, self.outputs, stats,
                                detector_every=sc.detector_every, stop=self.stop_event,
                                progress=progress, on_step=step)
            else:
                run_realtime(source, core, gate, self.outputs, stats, rate_hz=sc.rate_hz,
                             detector_hz=sc.rate_hz, stop=self.stop_event, on_step=step,
                             on_idle=idle, on_source=source_state)
        except (SourceError, SinkError) as e:
            logger.error("run failed: %s", e)
            stats.error = str(e)
            return 1
        return 0

    def stop(self) -> None:
        """Asks the loop to end after the current frame (any thread, a signal handler too)."""
        self.stop_event.set()

    # ------------------------------------------------------------------ stop

    def close(self) -> int:
        """Closes the outputs (reverse order, queued frames written) and then the source.

        Returns:
            0, or 1 when an output failed while closing (logged; ``stats.error`` says why).
        """
        if self._closed:
            return 0
        self._closed = True
        code = 0
        for out in reversed(self.outputs):
            try:
                out.close()
            except SinkError as e:
                logger.error("closing an output failed: %s", e)
                self.stats.error = self.stats.error or str(e)
                code = 1
        if self.source is not None:
            self.source.close()
        return code

    # ------------------------------------------------------------------ read by anyone

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of the run's figures, for any thread.

        Returns:
            :meth:`RunStats.summary` plus ``mode``, ``settings`` (the controls), ``people`` (in
            the last frame), ``outputs`` (per queued output: frames written and dropped) and
            ``source_dropped`` (frames the source itself dropped or skipped).
        """
        out = self.stats.summary()
        out["mode"] = self.mode
        out["settings"] = self.controls.snapshot()
        out["people"] = self.core.people if self.core is not None else 0
        out["outputs"] = {q.name: {"written": q.written, "dropped": q.dropped}
                          for q in self._queued}
        out["source_dropped"] = self.source.dropped if self.source is not None else 0
        return out


class StillImages:
    """Still images through an image-mode pipeline of their own (``POST /v1/pose``).

    The models are loaded once; each image is independent (the core is reset before it, the
    detector takes every tile). Calls are serialised: one interpreter serves one call at a time.

    Args:
        config: The validated configuration (its models, detector and tracking).
    """

    def __init__(self, config: Config) -> None:
        self.pipeline = build_pipeline(config, timings=True, mode="image")
        self._lock = threading.Lock()
        self._count = 0

    def __call__(self, image_bgr: Any, name: str = "") -> Annotation:
        """The annotation of one (H, W, 3) uint8 BGR image (``file`` set to ``name``)."""
        with self._lock:
            self._count += 1
            frame = Frame(image_bgr, self._count - 1, self._count * 1_000_000_000,
                          time.time(), name=name)
            self.pipeline.core.reset()
            return self.pipeline.core.step(frame, self.pipeline.detect(frame)).annotation
