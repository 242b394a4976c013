"""The ``[http]`` config section: the local HTTP API and browser viewer.

The bearer token is not a key of the file: like the MQTT password it is read at load time from
``$CREDENTIALS_DIRECTORY/<token_credential>`` (systemd ``LoadCredential=``) or else from the
environment variable ``token_env`` (see :func:`load_http_token`). Binding any address other
than a loopback one without a token is refused (:func:`check_bind`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from edge.config import ConfigError, HttpConfig, read_secret

__all__ = ["HttpConfig", "check_bind", "is_loopback", "load_http_token"]

LOOPBACK_NAMES = ("localhost", "ip6-localhost")


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
    found = read_secret(config.token_credential, config.token_env, "http.token_credential",
                        environ)
    return None if found is None else found[0].strip() or None


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
