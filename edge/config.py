"""The one validated configuration of edge-pose, loaded from TOML.

Every section is a pydantic model with ``extra="forbid"``, so a misspelt key is an error that
names its path. Types are strict: a string is never turned into a number or a boolean
(``port = "1883"``, ``loop = "yes"`` are errors; an integer where a float is expected is fine),
and every number must be finite. ``edge-pose validate-config FILE`` prints every error at once,
then runs the checks the daemon makes before it starts (:mod:`edge.preflight`).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PositiveFloat = Annotated[float, Field(gt=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
#: A path from TOML (a string); the one non-strict type (TOML has no path type).
PathStr = Annotated[Path, Field(strict=False)]

#: ``detector_hz`` range, config and ``set/detector_hz`` alike: below 0.1 Hz the detector
#: practically never runs while the device looks healthy; above 60 Hz is no camera's rate.
DETECTOR_HZ_MIN, DETECTOR_HZ_MAX = 0.1, 60.0


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class SourceConfig(_Section):
    """Where frames come from.

    ``uri`` is a video or image file, a folder of images, a camera index (``"0"``) or V4L2
    device path (``/dev/video0``, ``/dev/v4l/by-id/...``), an
    ``rtsp://``/``http(s)://`` URL, or ``picamera2`` (``picamera2:0`` for camera 0).
    ``rotate`` and ``mirror`` are how the camera is mounted: a mounting fact, so it is set
    here, never guessed per frame (image mode's search of a still on its side is another
    thing: a photo's own orientation).
    """

    uri: str = Field(default="demo", min_length=1, description="an empty one read the "
                     "current folder as a folder of images")
    width: int | None = Field(default=None, gt=0, description="requested capture width, px")
    height: int | None = Field(default=None, gt=0, description="requested capture height, px")
    fps: float | None = Field(default=None, gt=0, description="requested capture rate, Hz")
    reconnect_initial_s: PositiveFloat = 0.5
    reconnect_max_s: PositiveFloat = Field(
        default=2.0, description="largest reconnect delay of a live source, s: a failed open "
        "every 2 s costs nothing, and a camera that comes back is used within 2 s")
    stall_timeout_s: float = Field(
        default=10.0, ge=0.5, le=600, description="an rtsp/http stream's connection that takes "
        "longer than this to open or to deliver a frame is closed and opened again, s (a pulled "
        "cable or a camera's power cut closes nothing: FFmpeg's own 30 s kept the stream stalled "
        "that long after the camera was back); above the camera's keyframe interval")
    loop: bool = Field(default=False, description="restart a file source at its end")
    rotate: Literal[0, 90, 180, 270] = Field(
        default=0, description="degrees clockwise every frame is turned as it is read: the "
        "camera's mounting (180: upside down; 90 or 270: on its side, e.g. portrait for a "
        "corridor). Everything after the source (detector, annotations, video, HTTP frame, "
        "width and height) sees the turned frame; width and height above stay the device's")
    mirror: bool = Field(default=False, description="flip every frame left to right after "
                         "the turn (a camera behind a mirror, or a mirrored stream)")

    @model_validator(mode="after")
    def _backoff(self) -> SourceConfig:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        return self


class ModelsConfig(_Section):
    """Which models run, and how."""

    landmark: Literal["lite", "full", "heavy"] = "full"
    precision: Literal["int8", "float"] = "int8"
    detector_precision: Literal["int8", "float"] | None = Field(
        default=None, description="detector precision; defaults to `precision`")
    lifter: Literal["mlp", "temporal", "world"] = Field(
        default="mlp", description="3D source: the trained single-frame lifter (COCO-17 "
        "joints), its causal temporal variant (past K frames; the single-frame lifter covers "
        "a track's first K-1), or the landmark model's world landmarks (all 33 joints)")
    limb_window: int = Field(
        default=90, ge=0, le=10_000, description="lifters only: frames of each track's "
        "history whose median limb lengths the 3D limbs are rescaled to (steady bone lengths; "
        "joint angles unchanged); 0 turns it off")
    left_right: bool = Field(
        default=True, description="undo the 2D model's left/right label flips "
        "per track (edge.lift3d.LeftRight), in the 3D and in the published 2D")
    threads: int = Field(default=2, ge=1, le=64, description="interpreter threads per model")
    landmark_parallel: bool = Field(
        default=False, description="with threads >= 2: a frame's people (and a lost person's "
        "rescue regions) run side by side on `threads` single-thread landmark interpreters "
        "(about +25 MB each) instead of one after another on one interpreter of `threads` "
        "threads; same poses. Gains only where cores are idle: on a loaded 2-core VM it was "
        "slower (edge.pipeline.build_landmarker)")
    dir: PathStr | None = Field(default=None, description="models folder (default: shipped)")


class DetectorConfig(_Section):
    """The person detector and its detection schedule.

    ``kind = "box"`` is a whole-body COCO box detector (NanoDet, person class;
    ``edge.detect.box``): it finds people whatever they face, from about 150 px tall in one
    pass over a 1280x720 frame, with an upright region. ``"blazepose"`` is BlazePose's SSD
    detector (it finds a face, and people taller than about a quarter of the frame, with a
    region turned with the body). ``"both"`` (the default) is the box detector alone on still
    images (``edge.pipeline.build_detector``, ``min_score`` 0.3 there); on a stream each
    call is one model: the box detector's whole-frame calls, and BlazePose's detector on the
    whole frame in every other tile slot (``TiledDetector.stream``). Tiles use the box
    detector. Still
    images (image mode) take the whole frame, every tile, and every tile of a finer grid
    (0.72 x ``tile_px``), with no time budget.

    With ``tiles = true`` the detector also runs on overlapping square tiles of ``tile_px``
    frame pixels (default: the model's input size, so a tile reaches the model unshrunk), in
    rotation: each detector run makes
    ``calls_per_run`` calls, the whole frame every ``whole_every``-th call, tiles in between;
    still images take the whole frame and every tile (``edge.detect.tiles``). ``min_score``,
    ``nms_iou`` and ``roi_scale`` default to each detector's own (box: 0.35, 0.5, 1.5;
    blazepose: MediaPipe's 0.5, 0.3, 1.25).
    """

    kind: Literal["both", "box", "blazepose"] = "both"
    min_score: Probability | None = None
    nms_iou: Probability | None = None
    roi_scale: PositiveFloat | None = Field(
        default=None, description="landmark region side over the detection's body size")
    tiles: bool = True
    tile_px: int | None = Field(default=None, ge=64, le=4096,
                                description="tile side, frame px (default: the model input)")
    tile_overlap: float = Field(default=0.25, ge=0.0, le=0.9,
                                description="fraction of a tile shared with its neighbour")
    calls_per_run: int = Field(default=1, ge=1, le=64,
                               description="detector calls per run (live and video modes)")
    whole_every: int = Field(default=2, ge=1, le=64,
                             description="the whole frame is every this-many-th call (1: no "
                             "tiles)")
    still_max_side: int = Field(default=2560, ge=416, le=8192,
                                description="still images: one larger than this (longer "
                                "side, px) is detected on a copy shrunk to it (8192: never)")


class SchedulerConfig(_Section):
    """Rates and budgets.

    ``mode = "realtime"`` ticks at ``rate_hz`` on the newest frame, with the detector in its own
    thread at ``detector_hz``; ``"every-frame"`` processes every frame of a file and runs the
    detector every ``detector_every`` frames by frame index, so a rerun gives identical output;
    ``"image"`` treats every frame as an independent still image (detector on each, nothing
    carried over, no confirmation tick). ``"auto"`` is ``image`` for an image file or a folder of
    images and ``realtime`` for anything else.
    """

    mode: Literal["auto", "realtime", "every-frame", "image"] = "auto"
    rate_hz: float = Field(default=30.0, ge=0.1, le=240.0)
    detector_hz: float = Field(default=10.0, ge=DETECTOR_HZ_MIN, le=DETECTOR_HZ_MAX,
                               description="detector runs per second: one call each, the "
                               "whole frame every detector.whole_every-th (5 Hz by default)")
    detector_every: int = Field(default=3, ge=1, description="every-frame mode: detector "
                                "period in frames")
    budget_detector_fps: PositiveFloat = 5.0
    budget_pose2d_fps: PositiveFloat = 55.0
    budget_pose3d_fps: PositiveFloat = 450.0


class TrackingConfig(_Section):
    """Tracking of people between detector runs (see ``edge.track.TrackerConfig``)."""

    max_persons: int = Field(
        default=6, ge=1, le=32, description="people tracked at once; each costs one landmark "
        "call per tick (8.4 ms at 1 thread, about 5.4 ms at 2, x86): 6 people keep 25 fps at "
        "2 threads (edge-bench)")
    max_persons_image: int = Field(
        default=32, ge=1, le=32, description="people found in one still image (image mode, "
        "POST /v1/pose): a still has no frame rate to keep; each person costs about 4 landmark "
        "calls")
    min_presence: Probability = 0.5
    match_iou: Annotated[float, Field(gt=0, le=1)] = 0.5
    match_center_dist: PositiveFloat = 0.15
    merge_iou: Annotated[float, Field(gt=0, le=1)] = 0.5
    merge_similarity: Probability = 0.5
    similarity_kappa: PositiveFloat = 0.1
    id_reuse_window_s: float = Field(default=5.0, ge=0)
    max_detection_age_s: float = Field(default=1.0, ge=0)
    confirm_ticks: int = Field(default=1, ge=0, le=30, description="ticks a new track must "
                               "survive before it is published")
    min_box_fit: Probability = Field(
        default=0.4, description="a track from a whole-body box is kept after its first pose "
        "only if the landmarks' box overlaps the detection's by IoU >= this (0: off)")


class SmoothingConfig(_Section):
    """One-Euro filter parameters (Casiez et al. 2012); ``enabled = false`` passes data through.

    ``beta`` is per unit of speed, so it differs between pixels (2D) and metres (3D).
    """

    enabled: bool = True
    min_cutoff_2d: PositiveFloat = 1.0
    beta_2d: float = Field(default=0.05, ge=0)
    min_cutoff_3d: PositiveFloat = 1.0
    beta_3d: float = Field(default=20.0, ge=0)
    d_cutoff: PositiveFloat = 1.0


class AnnotationConfig(_Section):
    """What each annotation carries."""

    device_id: str = Field(default="edge-pose", min_length=1, max_length=64,
                           pattern=r"^[A-Za-z0-9_.-]+$")
    joints: Literal["blazepose33", "coco17"] = "blazepose33"
    min_visibility: Probability = Field(
        default=0.0, description="joints below this visibility are published as null")


class OutputConfig(_Section):
    """File and console sinks."""

    dir: PathStr | None = None
    jsonl: bool = True
    video: bool = Field(default=True, description="annotated.mp4 (video and live modes)")
    video_codec: Literal["auto", "mp4v", "mjpeg"] = Field(
        default="auto", description="codec of annotated.mp4. auto: mjpeg in every-frame runs "
        "(they wait for the writer), mp4v in realtime runs; mp4v: MPEG-4 Part 2, small; mjpeg: "
        "Motion JPEG, about half the writer CPU time and 5x the size")
    images: bool = Field(default=True, description="annotated images in annotated/ (image mode)")
    coco: bool = Field(default=True, description="coco_keypoints.json (image mode)")
    stdout: bool = False


class MqttTlsConfig(_Section):
    """TLS to the broker (``enabled = false``: plain TCP).

    ``ca_file`` None trusts the system's CAs; ``cert_file``/``key_file`` give a client
    certificate; ``insecure = true`` skips the host name check (a test broker only).
    """

    enabled: bool = False
    ca_file: PathStr | None = None
    cert_file: PathStr | None = None
    key_file: PathStr | None = None
    insecure: bool = False

    @model_validator(mode="after")
    def _pair(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class HomeAssistantConfig(_Section):
    """Home Assistant MQTT discovery (opt-in): a device with people-count and fps sensors."""

    enabled: bool = False
    discovery_prefix: str = Field(default="homeassistant", min_length=1, max_length=64,
                                  pattern=r"^[A-Za-z0-9_./-]+$")


class MqttConfig(_Section):
    """The MQTT publisher of the daemon (topics under ``<topic_root>/<annotation.device_id>/``).

    The password is not a key of the file: it is read at load time from
    ``$CREDENTIALS_DIRECTORY/<password_credential>`` (systemd ``LoadCredential=``) or else from
    the environment variable ``password_env`` (see :func:`load_secrets`).
    """

    enabled: bool = True
    host: str = Field(default="localhost", min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    topic_root: str = Field(default="edgepose", min_length=1, max_length=64,
                            pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    username: str | None = Field(default=None, min_length=1)
    password_env: str = Field(default="EDGE_POSE_MQTT_PASSWORD",
                              pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    password_credential: str = Field(default="mqtt_password", pattern=r"^[A-Za-z0-9_.-]+$")
    tls: MqttTlsConfig = MqttTlsConfig()
    reconnect_min_s: float = Field(default=0.5, ge=0.05, le=3600, description="first "
                                   "reconnect delay, s (doubles per failed attempt)")
    reconnect_max_s: float = Field(default=3.0, ge=0.05, le=3600, description="largest "
                                   "reconnect delay, s; each delay is jittered down to half")
    pose_qos: Literal[0, 1, 2] = 0
    pose_queue: int = Field(default=5, ge=0, le=1000, description="newest pose frames kept "
                            "while disconnected (older ones are dropped and counted)")
    events_queue: int = Field(default=10_000, ge=1, le=1_000_000, description="events kept "
                              "(and saved) until the broker acknowledges them")
    stats_interval_s: float = Field(default=10.0, ge=0.5, le=3600)
    command_max_bytes: int = Field(default=256, ge=16, le=65536)
    home_assistant: HomeAssistantConfig = HomeAssistantConfig()

    @model_validator(mode="after")
    def _backoff(self) -> MqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self


class ServiceConfig(_Section):
    """The daemon (``edge-pose daemon``).

    ``state_dir`` holds the events not yet acknowledged by the broker; default
    ``$STATE_DIRECTORY`` (systemd ``StateDirectory=``), else ``/var/lib/edge-pose``.
    """

    state_dir: PathStr | None = None
    journal_sync_ms: int = Field(default=0, ge=0, le=60_000, description="0: every event "
                                 "is on disk before it is published; N: synced within N ms "
                                 "(a power cut may lose the last N ms; a new stream follows)")
    shutdown_timeout_s: float = Field(default=5.0, ge=0, le=300, description="how long a stop "
                                      "waits for queued events to be acknowledged")
    watchdog: bool = Field(default=True, description="ping systemd's watchdog from the frame "
                           "loop when WatchdogSec= is set")


class LoggingConfig(_Section):
    """Logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class HttpConfig(_Section):
    """The HTTP transport (``edge-pose serve``; inside the daemon when ``enabled``)."""

    enabled: bool = False
    host: str = Field(default="127.0.0.1", min_length=1, max_length=255,
                      description="address to bind; anything but loopback needs a token")
    port: int = Field(default=8080, ge=0, le=65535, description="0: any free port")
    token_env: str = Field(default="EDGE_POSE_HTTP_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    token_credential: str = Field(default="http_token", pattern=r"^[A-Za-z0-9_.-]+$")
    max_body_bytes: int = Field(default=8 << 20, ge=1024, le=64 << 20,
                                description="largest POST /v1/pose body (413 above)")
    max_pixels: int = Field(default=24_000_000, ge=1, le=200_000_000,
                            description="largest image width x height for POST /v1/pose (413)")
    pose_rate_per_s: float = Field(default=2.0, gt=0, le=1000,
                                   description="POST /v1/pose requests per second per client")
    pose_burst: int = Field(default=4, ge=1, le=1000,
                            description="POST /v1/pose requests a client may send at once")
    pose_pending: int = Field(default=4, ge=1, le=64,
                              description="POST /v1/pose requests waiting for the model (503 "
                              "above)")
    queue: int = Field(default=8, ge=1, le=1000, description="pose frames between the core "
                       "and the server (the oldest is dropped and counted when full)")
    client_queue: int = Field(default=30, ge=1, le=10_000, description="pose frames kept per "
                              "stream client that reads too slowly (oldest dropped, counted)")
    events_kept: int = Field(default=1000, ge=1, le=100_000, description="recent events kept "
                             "for clients resuming /v1/events with Last-Event-ID")
    max_clients: int = Field(default=32, ge=1, le=1000, description="stream, events and MJPEG "
                             "clients at once (503 above)")
    write_timeout_s: float = Field(default=20.0, gt=0, le=600, description="a streaming "
                                   "client that takes no data for this long is disconnected")
    read_timeout_s: float = Field(default=30.0, gt=0, le=600, description="a request whose "
                                  "headers or body take longer than this to arrive is cut "
                                  "(408 for a body), as is a connection idle for this long")
    mjpeg_max_fps: float = Field(default=10.0, gt=0, le=60)
    jpeg_quality: int = Field(default=80, ge=10, le=100)
    jpeg_max_width: int = Field(default=1280, ge=64, le=8192, description="wider frames are "
                                "scaled down before JPEG encoding")
    worker_nice: int = Field(default=10, ge=0, le=19, description="nice value added to the "
                             "JPEG and still-image worker threads, so that the core wins")
    ready_max_frame_age_s: float = Field(default=5.0, gt=0, le=3600, description="/readyz "
                                         "fails when the newest frame is older than this")

    @model_validator(mode="after")
    def _host(self) -> HttpConfig:
        if any(c.isspace() for c in self.host) or "/" in self.host:
            raise ValueError(f"host {self.host!r} is not an address or host name")
        return self


class Config(_Section):
    """The whole configuration."""

    source: SourceConfig = SourceConfig()
    models: ModelsConfig = ModelsConfig()
    detector: DetectorConfig = DetectorConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    tracking: TrackingConfig = TrackingConfig()
    smoothing: SmoothingConfig = SmoothingConfig()
    annotation: AnnotationConfig = AnnotationConfig()
    output: OutputConfig = OutputConfig()
    mqtt: MqttConfig = MqttConfig()
    service: ServiceConfig = ServiceConfig()
    logging: LoggingConfig = LoggingConfig()
    http: HttpConfig = HttpConfig()


class ConfigError(ValueError):
    """A config file cannot be used; ``errors`` lists ``(key.path, message)`` pairs."""

    def __init__(self, path: str, errors: list[tuple[str, str]]) -> None:
        self.path = path
        self.errors = errors
        lines = "\n".join(f"  {k}: {m}" for k, m in errors)
        super().__init__(f"config {path}: {len(errors)} error(s)\n{lines}")


def _keys(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of ``model``, sections and their keys, depth first."""
    out: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        out.append((*prefix, name))
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out += _keys(sub, (*prefix, name))
    return out


def unknown_key_hint(model: type[BaseModel], loc: Sequence[str]) -> str:
    """What a mistyped or misplaced key at ``loc`` was most likely meant to be.

    A key of the same section spelt alike (``difflib``, ratio >= 0.75) is suggested; else a key
    spelt alike in another section (``min_presence`` under ``[detector]`` belongs in
    ``[tracking]``).

    Args:
        model: The root model (:class:`Config`, or the fuse worker's).
        loc: The unknown key's path, section names then the key.

    Returns:
        ``"; did you mean tracking.min_presence?"``, or ``""`` when nothing is close.
    """
    *parent, key = loc
    keys = _keys(model)
    for near in ([k for k in keys if list(k[:-1]) == parent],   # its own section first
                 [k for k in keys if list(k[:-1]) != parent]):
        alike = set(difflib.get_close_matches(key, {k[-1] for k in near}, n=1, cutoff=0.75))
        if alike:
            return f"; did you mean {' or '.join('.'.join(k) for k in near if k[-1] in alike)}?"
    return ""


def _errors(e: ValidationError, model: type[BaseModel] | None = None
            ) -> list[tuple[str, str]]:
    """Each of ``e``'s errors as (key path, message); unknown keys get a hint from ``model``."""
    out = []
    for err in e.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            if model is not None:
                msg += unknown_key_hint(model, [str(p) for p in err["loc"]])
        elif err["type"] in ("float_type", "int_type", "bool_type", "string_type"):
            msg += f" (got {type(err['input']).__name__} {str(err['input'])[:40]!r})"
        out.append((loc, msg))
    return out


MAX_CONFIG_BYTES = 1_000_000


def parse_config(data: dict[str, Any], origin: str = "<dict>") -> Config:
    """Validates a config mapping.

    Raises:
        ConfigError: Listing every error with its key path.
    """
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(origin, _errors(e, Config)) from None


def read_toml(path: Path) -> dict[str, Any]:
    """Reads a TOML config file (the device's or a fuse worker's), not yet validated.

    Raises:
        ConfigError: When the file is missing, unreadable, too large or not TOML.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [("(file)", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), [("(file)", f"unreadable: {e}")]) from None
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(str(path), [("(file)", f"{len(text)} characters; a config is at "
                                       f"most {MAX_CONFIG_BYTES}")])
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), [("(file)", f"not valid TOML: {e}")]) from None
    except RecursionError:
        raise ConfigError(str(path), [("(file)", "nested too deeply to be a config")]
                          ) from None


def load_config(path: Path) -> Config:
    """Reads and validates a TOML config file.

    Raises:
        ConfigError: When the file is missing, is not TOML, or does not validate.
    """
    data = read_toml(path)
    try:
        return parse_config(data, str(path))
    except RecursionError:
        raise ConfigError(str(path), [("(top level)", "nested too deeply to be a config")]
                          ) from None


@dataclass(frozen=True)
class Secrets:
    """Secrets read at load time, never written to a config file.

    Attributes:
        mqtt_password: The broker password, or None.
        mqtt_password_from: Where it came from (for logs; never the value).
    """

    mqtt_password: str | None = None
    mqtt_password_from: str | None = None

    def __repr__(self) -> str:
        return f"Secrets(mqtt_password={'***' if self.mqtt_password else None})"


def load_secrets(config: Config, environ: Mapping[str, str] | None = None) -> Secrets:
    """Reads the secrets ``config`` refers to (see :func:`mqtt_password`).

    Args:
        config: The validated config.
        environ: The environment (``os.environ`` when None).

    Returns:
        The secrets.

    Raises:
        ConfigError: When the credential file exists but cannot be read.
    """
    return mqtt_password(config.mqtt, environ)


class PasswordSource(Protocol):
    """Where an MQTT section says its password is (the device's and the fuse worker's)."""

    @property
    def password_credential(self) -> str:
        """File name under ``$CREDENTIALS_DIRECTORY``."""

    @property
    def password_env(self) -> str:
        """Environment variable name."""


def mqtt_password(mc: PasswordSource, environ: Mapping[str, str] | None = None) -> Secrets:
    """Reads the broker password an MQTT section refers to.

    The credential file ``$CREDENTIALS_DIRECTORY/<mqtt.password_credential>`` wins over the
    environment variable ``mqtt.password_env``; an empty file or variable means no password
    (the installer creates an empty credential so that ``LoadCredential=`` always finds one).

    Args:
        mc: The validated ``[mqtt]`` section.
        environ: The environment (``os.environ`` when None).

    Returns:
        The secrets.

    Raises:
        ConfigError: When the credential file exists but cannot be read.
    """
    found = read_secret(mc.password_credential, mc.password_env, "mqtt.password_credential",
                        environ)
    return Secrets() if found is None else Secrets(*found)


def read_secret(credential: str, env_var: str, key: str,
                environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """Reads a secret from systemd's credentials, else from the environment.

    ``$CREDENTIALS_DIRECTORY/<credential>`` (stripped) wins over ``$<env_var>``; an empty file
    or variable counts as absent (the installer creates empty credentials so that
    ``LoadCredential=`` always finds one).

    Args:
        credential: The credential's file name.
        env_var: The environment variable's name.
        key: The config key naming the credential, for errors.
        environ: The environment (``os.environ`` when None).

    Returns:
        ``(secret, where it came from)``, or None.

    Raises:
        ConfigError: When the credential file exists but cannot be read (names ``key``).
    """
    env = os.environ if environ is None else environ
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds:
        path = Path(creds) / credential
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            text = ""
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(str(path), [(key, f"unreadable: {e}")]) from None
        if text:
            return text, f"credential {credential}"
    value = env.get(env_var, "")
    return (value, f"${env_var}") if value else None
