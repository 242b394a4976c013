"""The ``[http]`` config section: the local HTTP API and browser viewer.

The bearer token is not a key of the file: like the MQTT password it is read at load time from
``$CREDENTIALS_DIRECTORY/<token_credential>`` (systemd ``LoadCredential=``) or else from the
environment variable ``token_env`` (see :func:`load_http_token`). Binding any address other
than a loopback one without a token is refused (:func:`check_bind`).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.config import ConfigError

LOOPBACK_NAMES = ("localhost", "ip6-localhost")


class HttpConfig(BaseModel):
    """The HTTP transport (``edge-pose serve``; inside the daemon when ``enabled``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name) only accepts connections from this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_http_token(config: HttpConfig, environ: Mapping[str, str] | None = None
                    ) -> str | None:
    """Reads the bearer token.

    ``$CREDENTIALS_DIRECTORY/<token_credential>`` wins over ``$<token_env>``; an empty file or
    variable means no token.

    Args:
        config: The ``[http]`` section.
        environ: The environment (``os.environ`` when None).

    Returns:
        The token, or None.

    Raises:
        ConfigError: When the credential file exists but cannot be read.
    """
    env = os.environ if environ is None else environ
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds:
        path = Path(creds) / config.token_credential
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            text = ""
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(str(path), [("http.token_credential", f"unreadable: {e}")]
                              ) from None
        if text:
            return text
    return env.get(config.token_env, "").strip() or None


def check_bind(config: HttpConfig, token: str | None, origin: str = "[http]") -> None:
    """Refuses a non-loopback bind without a token.

    Raises:
        ConfigError: Naming ``http.host`` and how to provide a token.
    """
    if token is None and not is_loopback(config.host):
        raise ConfigError(origin, [(
            "http.host", f"binding {config.host} (not loopback) needs a bearer token: put it in "
            f"$CREDENTIALS_DIRECTORY/{config.token_credential} or ${config.token_env}, or bind "
            "127.0.0.1")])
    if token is not None and len(token) < 16:
        raise ConfigError(origin, [(
            "http.token_credential", "the bearer token is shorter than 16 characters; make a "
            "longer one (e.g. `openssl rand -hex 32`)")])
