"""The validated configuration of the live fuse service (``edge-pose fuse --config fuse.toml``).

Same rules as the device config (:mod:`edge.config`): TOML, one pydantic model per section,
``extra="forbid"`` (a misspelt key is an error naming its path), strict types, finite numbers,
secrets from ``$CREDENTIALS_DIRECTORY`` or the environment at load time. Loading also reads the
calibration (:func:`edge.fuse.calib.read_calibration`), so a calibration that cannot be used
(missing, malformed, NaN, a camera the ``[scene.devices]`` table names but the file lacks) is a
config error naming the key and the file, exit status 2.

**One worker, one scene.** A worker fuses exactly one scene: the devices of ``[scene.devices]``
(device id -> camera name in the calibration). Its input is every pose topic under
``mqtt.topic_root`` (``<topic_root>/+/pose``). A site with several scenes gives each scene its
own topic root on the devices (``mqtt.topic_root = "edgepose/<scene>"`` in each device's
config) and runs one worker per scene (``edge-pose-fuse@<scene>.service``). A scene's input is
never split between workers: MQTT shared subscriptions (``$share/<group>/...``) hand each
message to *one* member of the group, so two workers sharing a scene would each see part of
every view; ``topic_root`` therefore refuses ``$share`` (and wildcards), see
``deploy/fuse.example.toml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.config import (
    ConfigError,
    LoggingConfig,
    MqttTlsConfig,
    PathStr,
    Secrets,
    _errors,
    mqtt_password,
    read_toml,
)
from edge.fuse.calib import Calibration, CalibrationError, read_calibration
from edge.fuse.fuser import FuseSettings

#: A device id as the device config allows it (``annotation.device_id``).
DeviceId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
#: A topic made of plain levels: no wildcard, no ``$share``, no empty level.
TOPIC_PATTERN = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class SceneConfig(_Section):
    """The one scene this worker fuses.

    ``devices`` maps each device id (the devices' ``annotation.device_id``) to its camera's
    name in the calibration file. Frames from any other device id are ignored (warned once).
    """

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="scene key: the output topics are <fused_root>/<name>/...")
    calibration: PathStr = Field(description="Pose2Sim Calib.toml, Qualisys .qca.txt or "
                                 "OpenCV YAML")
    devices: dict[DeviceId, Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        min_length=2, description="device id -> camera name in the calibration (>= 2)")
    offsets_s: dict[DeviceId, Annotated[float, Field(ge=-3600, le=3600)]] = Field(
        default_factory=dict, description="device id -> seconds added to its capture times "
        "(a known clock or trigger offset; default 0)")
    rotate: dict[DeviceId, Literal[0, 90, 180, 270]] = Field(
        default_factory=dict, description="device id -> its source.rotate (degrees "
        "clockwise; default 0): the calibration is of the camera's own frame, the device "
        "publishes it turned, and the worker turns that camera's model to match "
        "(edge.fuse.calib.CameraModel.turned). Must be the device's own value: a quarter "
        "turn missing here is a size mismatch, a half turn is not seen")

    @model_validator(mode="after")
    def _distinct_cameras(self) -> SceneConfig:
        cams = list(self.devices.values())
        dup = sorted({c for c in cams if cams.count(c) > 1})
        if dup:
            raise ValueError(f"camera(s) {', '.join(dup)} given to more than one device")
        stray = sorted(set(self.offsets_s) - set(self.devices))
        if stray:
            raise ValueError(f"offsets_s names device(s) {', '.join(stray)} that are not in "
                             "devices")
        stray = sorted(set(self.rotate) - set(self.devices))
        if stray:
            raise ValueError(f"rotate names device(s) {', '.join(stray)} that are not in "
                             "devices")
        return self


class SyncConfig(_Section):
    """The devices' rate and when a silent device counts as gone.

    The grouping itself (``tolerance_s``, default half a frame period at ``fps``;
    ``max_wait_s``, the longest a group waits for a lagging device; ``max_clock_offset_s``) is
    set in ``[fuse]`` (:class:`edge.fuse.fuser.FuseSettings`).
    """

    fps: float = Field(default=30.0, gt=0, le=240, description="the devices' frame rate, Hz")
    device_timeout_s: float = Field(default=2.0, gt=0, le=3600, description="a device "
                                    "silent for this long is reported missing and no group "
                                    "waits for it")


class FuseMqttConfig(_Section):
    """The broker: input ``<topic_root>/+/pose``; output under ``<fused_root>/<scene.name>/``.

    Output topics: ``pose3d`` (each fused frame, ``edge/fused.schema.json``), ``stats``
    (every ``stats_interval_s``), ``availability`` (retained: ``online``, ``stopped``, ``failed``;
    ``offline`` as the last will). Broker address, authentication, TLS and reconnect backoff
    work as the device's ``[mqtt]`` (the password from ``$CREDENTIALS_DIRECTORY/
    <password_credential>`` or ``$<password_env>``, never from this file).
    """

    host: str = Field(default="localhost", min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    topic_root: str = Field(default="edgepose", min_length=1, max_length=128,
                            pattern=TOPIC_PATTERN, description="the devices' mqtt.topic_root; "
                            "per-scene roots (edgepose/<scene>) keep scenes apart")
    fused_root: str = Field(default="edgepose/fused", min_length=1, max_length=128,
                            pattern=TOPIC_PATTERN)
    client_id: str | None = Field(default=None, min_length=1, max_length=128,
                                  pattern=r"^[A-Za-z0-9_.-]+$", description="default: "
                                  "edgepose-fuse-<scene>")
    username: str | None = Field(default=None, min_length=1)
    password_env: str = Field(default="EDGE_POSE_MQTT_PASSWORD",
                              pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    password_credential: str = Field(default="mqtt_password", pattern=r"^[A-Za-z0-9_.-]+$")
    tls: MqttTlsConfig = MqttTlsConfig()
    reconnect_min_s: float = Field(default=0.5, ge=0.05, le=3600)
    reconnect_max_s: float = Field(default=3.0, ge=0.05, le=3600)
    input_qos: Literal[0, 1] = 0
    output_qos: Literal[0, 1] = 0
    stats_interval_s: float = Field(default=5.0, ge=0.2, le=3600)

    @model_validator(mode="before")
    @classmethod
    def _no_share(cls, data: Any) -> Any:
        root = data.get("topic_root") if isinstance(data, dict) else None
        if isinstance(root, str) and (root.startswith("$share/") or "+" in root or "#" in root):
            raise ValueError(
                f"topic_root {root!r}: no wildcards or $share: a shared subscription would "
                "split one scene's frames between workers; give each scene its own topic root "
                "on its devices (edgepose/<scene>) and run one worker per scene")
        return data

    @model_validator(mode="after")
    def _backoff(self) -> FuseMqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self


class IngestConfig(_Section):
    """Between the MQTT network thread and the fusion thread."""

    queue: int = Field(default=512, ge=8, le=100_000, description="pose payloads waiting for "
                       "the fusion thread; when full the oldest is dropped and counted")


class FuseOutputConfig(_Section):
    """The JSONL sink: one fused frame per line, appended (``None``: no file)."""

    jsonl: PathStr | None = None


class FuseServiceConfig(_Section):
    """The process."""

    watchdog: bool = Field(default=True, description="ping systemd's watchdog from the "
                           "fusion loop when WatchdogSec= is set")
    shutdown_timeout_s: float = Field(default=3.0, ge=0, le=300)


class StrictFuseSettings(FuseSettings):
    """The fusion settings, held to this file's rules.

    :class:`~edge.fuse.fuser.FuseSettings` with strict types (no ``"0.5"`` for a number, no
    ``"yes"`` for a boolean) and finite numbers, as every other section.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class FuseConfig(_Section):
    """The whole fuse configuration."""

    scene: SceneConfig
    sync: SyncConfig = SyncConfig()
    fuse: StrictFuseSettings = Field(default_factory=StrictFuseSettings)
    mqtt: FuseMqttConfig = FuseMqttConfig()
    ingest: IngestConfig = IngestConfig()
    output: FuseOutputConfig = FuseOutputConfig()
    service: FuseServiceConfig = FuseServiceConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _timeout(self) -> FuseConfig:
        if self.sync.device_timeout_s < self.fuse.max_wait_s:
            raise ValueError("sync.device_timeout_s must be >= fuse.max_wait_s")
        return self

    @property
    def tolerance_s(self) -> float:
        """The grouping tolerance, s: ``fuse.tolerance_s`` or half a frame at ``sync.fps``."""
        return self.fuse.tolerance_for(1.0 / self.sync.fps)


def parse_fuse_config(data: dict[str, Any], origin: str = "<dict>",
                      base: Path | None = None) -> tuple[FuseConfig, Calibration]:
    """Validates a fuse config mapping and reads its calibration.

    Args:
        data: The parsed TOML.
        origin: Where it came from (for messages).
        base: Folder relative paths (calibration, jsonl) are taken from (default: the current
            folder).

    Returns:
        The config (relative paths made absolute against ``base``) and the calibration.

    Raises:
        ConfigError: Listing every error with its key path; a calibration that cannot be read,
            holds NaN or lacks a camera of ``scene.devices`` is reported under
            ``scene.calibration`` / ``scene.devices.<id>``.
    """
    try:
        config = FuseConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(origin, _errors(e, FuseConfig)) from None
    if base is not None:
        scene = config.scene
        updates: dict[str, Any] = {}
        if not scene.calibration.is_absolute():
            updates["scene"] = scene.model_copy(update={"calibration": base / scene.calibration})
        jsonl = config.output.jsonl
        if jsonl is not None and not jsonl.is_absolute():
            updates["output"] = config.output.model_copy(update={"jsonl": base / jsonl})
        config = config.model_copy(update=updates)
    return config, load_scene_calibration(config, origin)


def load_scene_calibration(config: FuseConfig, origin: str) -> Calibration:
    """Reads ``scene.calibration``, checks its cameras, turns those ``scene.rotate`` names.

    Raises:
        ConfigError: Under ``scene.calibration`` (unreadable, malformed, non-finite),
            ``scene.devices.<id>`` (a camera the file lacks) or ``scene.rotate.<id>`` (a
            camera that cannot be turned).
    """
    path = config.scene.calibration
    try:
        calib = read_calibration(path)
    except CalibrationError as e:
        msg = str(e) if str(path) in str(e) else f"{path}: {e}"
        raise ConfigError(origin, [("scene.calibration", msg)]) from None
    except OSError as e:
        raise ConfigError(origin, [("scene.calibration", f"{path}: unreadable: {e}")]
                          ) from None
    names = camera_names(calib)
    errors = [(f"scene.devices.{dev}", f"camera {cam!r} is not in {path} (it has "
               f"{', '.join(sorted(names))})")
              for dev, cam in config.scene.devices.items() if cam not in names]
    if errors:
        raise ConfigError(origin, errors)
    errors = []
    for dev, deg in config.scene.rotate.items():
        try:
            calib.cameras[config.scene.devices[dev]].turned(deg)
        except CalibrationError as e:
            errors.append((f"scene.rotate.{dev}", str(e)))
    if errors:
        raise ConfigError(origin, errors)
    return calib.turned({config.scene.devices[dev]: deg
                         for dev, deg in config.scene.rotate.items()})


def camera_names(calib: Calibration) -> set[str]:
    """The camera names a calibration holds."""
    return set(calib.cameras)


def load_fuse_config(path: Path) -> tuple[FuseConfig, Calibration]:
    """Reads and validates a fuse TOML file and its calibration.

    Relative paths in the file are taken from the file's folder.

    Raises:
        ConfigError: When the file is missing, is not TOML, does not validate, or its
            calibration cannot be used.
    """
    data = read_toml(path)
    return parse_fuse_config(data, str(path), base=Path(path).resolve().parent)


def load_fuse_secrets(config: FuseConfig, environ: Mapping[str, str] | None = None
                      ) -> Secrets:
    """The broker password, read as the device's (:func:`edge.config.mqtt_password`).

    Raises:
        ConfigError: When the credential file exists but cannot be read.
    """
    return mqtt_password(config.mqtt, environ)

