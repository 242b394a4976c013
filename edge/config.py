"""The one validated configuration of edge-pose, loaded from TOML.

Every section is a pydantic model with ``extra="forbid"``, so a misspelt key is an error that
names its path. ``edge-pose validate-config FILE`` prints every error at once.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PositiveFloat = Annotated[float, Field(gt=0)]
Probability = Annotated[float, Field(ge=0, le=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Section):
    """Where frames come from.

    ``uri`` is a video or image file, a folder of images, a camera index (``"0"``), an
    ``rtsp://``/``http(s)://`` URL, or ``picamera2`` (``picamera2:0`` for camera 0).
    """

    uri: str = "demo"
    width: int | None = Field(default=None, gt=0, description="requested capture width, px")
    height: int | None = Field(default=None, gt=0, description="requested capture height, px")
    fps: float | None = Field(default=None, gt=0, description="requested capture rate, Hz")
    reconnect_initial_s: PositiveFloat = 0.5
    reconnect_max_s: PositiveFloat = 30.0
    loop: bool = Field(default=False, description="restart a file source at its end")

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
    lifter: Literal["mlp", "world"] = Field(
        default="mlp", description="3D source: the trained lifter, or the landmark model's "
        "world landmarks")
    threads: int = Field(default=2, ge=1, le=64, description="interpreter threads per model")
    dir: Path | None = Field(default=None, description="models folder (default: shipped)")


class DetectorConfig(_Section):
    """The SSD person detector's decoding (MediaPipe pose_detection's parameters)."""

    min_score: Probability = 0.5
    nms_iou: Probability = 0.3
    roi_scale: PositiveFloat = 1.25


class SchedulerConfig(_Section):
    """Rates and budgets.

    ``mode = "realtime"`` ticks at ``rate_hz`` on the newest frame, with the detector in its own
    thread at ``detector_hz``; ``"every-frame"`` processes every frame of a file and runs the
    detector every ``detector_every`` frames by frame index, so a rerun gives identical output.
    """

    mode: Literal["realtime", "every-frame"] = "realtime"
    rate_hz: PositiveFloat = 30.0
    detector_hz: PositiveFloat = 5.0
    detector_every: int = Field(default=6, ge=1)
    budget_detector_fps: PositiveFloat = 5.0
    budget_pose2d_fps: PositiveFloat = 55.0
    budget_pose3d_fps: PositiveFloat = 450.0


class TrackingConfig(_Section):
    """Tracking of people between detector runs (see ``edge.track.TrackerConfig``)."""

    max_persons: int = Field(default=4, ge=1, le=32)
    min_presence: Probability = 0.5
    match_iou: Annotated[float, Field(gt=0, le=1)] = 0.5
    match_center_dist: PositiveFloat = 0.15
    merge_iou: Annotated[float, Field(gt=0, le=1)] = 0.5
    merge_similarity: Annotated[float, Field(gt=0, le=1)] = 0.5
    similarity_kappa: PositiveFloat = 0.1
    id_reuse_window_s: float = Field(default=5.0, ge=0)
    max_detection_age_s: PositiveFloat = 1.0
    confirm_ticks: int = Field(default=1, ge=0, le=30, description="ticks a new track must "
                               "survive before it is published")


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

    dir: Path | None = None
    jsonl: bool = True
    video: bool = True
    stdout: bool = False


class LoggingConfig(_Section):
    """Logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


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
    logging: LoggingConfig = LoggingConfig()


class ConfigError(ValueError):
    """A config file cannot be used; ``errors`` lists ``(key.path, message)`` pairs."""

    def __init__(self, path: str, errors: list[tuple[str, str]]) -> None:
        self.path = path
        self.errors = errors
        lines = "\n".join(f"  {k}: {m}" for k, m in errors)
        super().__init__(f"config {path}: {len(errors)} error(s)\n{lines}")


def _errors(e: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append((loc, msg))
    return out


def parse_config(data: dict[str, Any], origin: str = "<dict>") -> Config:
    """Validates a config mapping.

    Raises:
        ConfigError: Listing every error with its key path.
    """
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(origin, _errors(e)) from None


def load_config(path: Path) -> Config:
    """Reads and validates a TOML config file.

    Raises:
        ConfigError: When the file is missing, is not TOML, or does not validate.
    """
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), [("(file)", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), [("(file)", f"unreadable: {e}")]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), [("(file)", f"not valid TOML: {e}")]) from None
    return parse_config(data, str(path))
