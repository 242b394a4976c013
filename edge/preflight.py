"""Checks a validated config against the machine, before anything starts.

The config model checks each value on its own (types, ranges); these checks need the file
system or a library: the files named exist and can be read and parsed (TLS CA, certificate and
key; the models and their manifest; the MQTT password credential), the state and output folders
can be created and written, and the source URI is well formed. ``edge-pose validate-config``
and ``edge-pose daemon`` run the same :func:`preflight`, so a config that validates is one the
daemon starts with; every problem is a :class:`~edge.config.ConfigError` naming the key (exit
status 2). Nothing is created or changed.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from edge.comms.events import JournalError, check_state_dir
from edge.config import Config, ConfigError, Secrets, load_secrets
from edge.runtime import ModelError, load_manifest, verify_file
from edge.types import is_ascii_number

#: Where the event journal lives when neither the config nor systemd says.
DEFAULT_STATE_DIR = Path("/var/lib/edge-pose")
URL_SCHEMES = ("rtsp", "rtsps", "http", "https")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$|^\[?[0-9A-Fa-f:.]+\]?$")


def resolve_state_dir(config: Config, environ: Mapping[str, str] | None = None) -> Path:
    """Where the event journal lives.

    Returns:
        ``service.state_dir``, else ``$STATE_DIRECTORY`` (its first entry), else
        ``/var/lib/edge-pose``.
    """
    env = os.environ if environ is None else environ
    if config.service.state_dir is not None:
        return config.service.state_dir
    sd = env.get("STATE_DIRECTORY", "")
    return Path(sd.split(":")[0]) if sd else DEFAULT_STATE_DIR


def _readable_file(path: Path) -> str | None:
    """Why ``path`` is not a readable regular file, or None."""
    try:
        if not path.exists():
            return f"{path}: no such file"
        if not path.is_file():
            return f"{path}: not a regular file"
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        return f"{path}: unreadable ({e.strerror or e})"
    return None


def check_tls(config: Config) -> list[tuple[str, str]]:
    """The TLS files exist, are readable and parse (``mqtt.tls.*``)."""
    tls = config.mqtt.tls
    if not (config.mqtt.enabled and tls.enabled):
        return []
    errors = []
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if path is not None and (why := _readable_file(path)) is not None:
            errors.append((f"mqtt.tls.{key}", why))
    if errors:
        return errors
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(tls.ca_file))
        except (ssl.SSLError, ValueError) as e:
            errors.append(("mqtt.tls.ca_file", f"{tls.ca_file}: not a PEM CA certificate "
                           f"({e})"))
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (ssl.SSLError, ValueError) as e:
            errors.append(("mqtt.tls.cert_file", f"{tls.cert_file} with {tls.key_file}: not a "
                           f"PEM certificate and its key ({e})"))
    return errors


def check_models(config: Config) -> list[tuple[str, str]]:
    """The manifest loads, and every model the config needs is in it and matches its sha256.

    The detectors of ``detector.kind``, the landmark model, and the lifter of
    ``models.lifter``: an option that validates must work (the temporal lifter is not shipped,
    so asking for it is a config error naming the command that builds it).
    """
    mc = config.models
    key = "models.dir" if mc.dir is not None else "models"
    try:
        manifest = load_manifest(mc.dir)
        entries = [manifest.find("landmark", mc.landmark, mc.precision)]
        if config.detector.kind in ("blazepose", "both"):
            entries.append(manifest.find("detector", None, mc.detector_precision or mc.precision))
        if config.detector.kind in ("box", "both"):
            boxes = [e for e in manifest.models.values() if e.role == "box_detector"]
            if not boxes:
                return [("detector.kind", f"no box detector in {manifest.folder}; rebuild it "
                         "with `make person-models`, or set detector.kind = \"blazepose\"")]
            entries.append(boxes[0])
        if mc.lifter != "world":
            variant = "temporal" if mc.lifter == "temporal" else "single"
            lifters = [e for e in manifest.models.values()
                       if e.role == "lifter" and e.variant == variant]
            if not lifters:
                return [("models.lifter", f"no {variant} lifter in {manifest.folder}: the "
                         f"{mc.lifter!r} lifter is built by `make lifter` and not shipped; "
                         "choose \"mlp\" or \"world\"")]
            entries.append(lifters[0])
            if variant == "temporal":
                singles = [e for e in manifest.models.values()
                           if e.role == "lifter" and e.variant == "single"]
                if not singles:
                    return [("models.lifter", f"no single-frame lifter in {manifest.folder}: "
                             "the temporal lifter needs it for the first frames of a track; "
                             "rebuild with `make lifter` or choose \"world\"")]
                entries.append(singles[0])
    except ModelError as e:
        return [(key, str(e))]
    errors: list[tuple[str, str]] = []
    for entry in entries:  # every damaged or missing file, not only the first
        try:
            verify_file(manifest.folder / entry.file, entry.sha256)
        except ModelError as e:
            errors.append((key, str(e)))
    return errors


def check_writable_dir(key: str, folder: Path) -> list[tuple[str, str]]:
    """``folder`` exists as a writable folder or can be created (nothing is created)."""
    d = Path(os.path.abspath(folder))
    existing = d
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return [(key, f"{d}: {existing} is not a folder")]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [(key, f"{d}: {existing} is not writable by this user")]
    return []


def check_source(config: Config, open_file: bool = False) -> list[tuple[str, str]]:
    """``source.uri`` is well formed: a known word, a camera index, a URL or an existing path.

    With ``open_file``, a file must also be an image or a video that can be read.
    """
    uri = config.source.uri
    if uri == "demo" or is_ascii_number(uri):
        return []
    if uri == "picamera2" or uri.startswith("picamera2:"):
        idx = uri.partition(":")[2]
        return [] if uri == "picamera2" or is_ascii_number(idx) else [
            ("source.uri", f"{uri!r}: expected picamera2 or picamera2:<index>")]
    if "://" in uri:
        try:
            parts = urlsplit(uri)
            port = parts.port  # ValueError when not a number in range
        except ValueError as e:
            return [("source.uri", f"{uri[:80]!r}: malformed URL ({e})")]
        if parts.scheme not in URL_SCHEMES:
            return [("source.uri", f"{uri[:80]!r}: scheme {parts.scheme!r} is not one of "
                     f"{', '.join(URL_SCHEMES)}")]
        if not parts.hostname or any(c.isspace() for c in uri) or port == 0:
            return [("source.uri", f"{uri[:80]!r}: malformed URL (no host, a space or port "
                     "0)")]
        return []
    path = Path(uri)
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            return [("source.uri", f"{path}: folder not readable")]
        return []
    why = _readable_file(path)
    if why is not None:
        return [("source.uri", f"{why}; expected demo, a video file, an image folder, a "
                 "camera index, an rtsp/http URL or picamera2")]
    return _openable_file(path) if open_file else []


def _openable_file(path: Path) -> list[tuple[str, str]]:
    """An image's header, or a video's first frame, can be read.

    The daemon would otherwise fail its start on a text file named ``.mp4`` after
    ``validate-config`` said ok.
    """
    from edge.sources import SourceError, VideoFileSource
    from edge.sources.files import IMAGE_SUFFIXES, image_size

    try:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            try:
                image_size(path)
            except OSError as e:
                raise SourceError(f"image {path}: cannot be read (not an image, or corrupt: "
                                  f"{e})") from None
        else:
            VideoFileSource(path).close()
    except SourceError as e:
        return [("source.uri", str(e))]
    return []


def check_mqtt(config: Config) -> list[tuple[str, str]]:
    """``mqtt.host`` looks like a host name or an address (no DNS lookup: offline)."""
    host = config.mqtt.host
    if config.mqtt.enabled and not _HOST.match(host):
        return [("mqtt.host", f"{host[:80]!r} is not a host name or IP address")]
    return []


def preflight(config: Config, environ: Mapping[str, str] | None = None, *,
              origin: str = "<config>", models: bool = True,
              open_source: bool = False) -> Secrets:
    """Runs every check the daemon needs before it starts, and reads the secrets.

    Args:
        config: The validated config.
        environ: The environment (``os.environ`` when None): ``$CREDENTIALS_DIRECTORY``,
            the password variable, ``$STATE_DIRECTORY``.
        origin: The config file's name, for the error.
        models: Whether to check the models (sha256 of the detector and landmark files).
        open_source: Whether a file source must also open (an image's header, a video's
            first frame): ``validate-config``. Not for the daemon, whose run fails on such a
            file after MQTT is up, so that ``failed`` and its reason are published (exit 1;
            the file may yet be replaced).

    Returns:
        The secrets.

    Raises:
        ConfigError: Listing every problem with its key.
    """
    env = os.environ if environ is None else environ
    errors: list[tuple[str, str]] = []
    secrets = Secrets()
    try:
        secrets = load_secrets(config, env)
    except ConfigError as e:
        errors += [(k, f"{e.path}: {m}") for k, m in e.errors]
    errors += check_mqtt(config)
    errors += check_tls(config)
    if models:
        errors += check_models(config)
    errors += check_source(config, open_file=open_source)
    if config.http.enabled:
        from edge.transports.http_config import check_bind, load_http_token

        try:
            check_bind(config.http, load_http_token(config.http, env), origin)
        except ConfigError as e:
            errors += e.errors
    if config.mqtt.enabled:
        sdir = resolve_state_dir(config, env)
        key = "service.state_dir" if config.service.state_dir is not None else (
            "service.state_dir ($STATE_DIRECTORY or the default)")
        try:
            check_state_dir(sdir)
        except JournalError as e:
            errors.append((key, str(e)))
    if config.output.dir is not None:
        errors += check_writable_dir("output.dir", config.output.dir)
    if errors:
        raise ConfigError(origin, errors)
    return secrets
