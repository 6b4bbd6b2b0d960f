"""gateway.toml: where the credential is, where to forward, where to listen, how big a request may be."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlparse

from fondation_agent.sandbox.gateway import CONTROL_SOCKET, JOBS_SOCKET
from fondation_agent.sandbox.launcher import JOB_CREDENTIALS

DEFAULT_UPSTREAM = "https://api.anthropic.com"
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024**2  # Claude Code's largest requests (images, long contexts) fit


class SettingsError(Exception):
    """gateway.toml is unreadable or wrong: one line naming the key."""


@dataclass(frozen=True)
class GatewaySettings:
    credentials_file: str = JOB_CREDENTIALS
    upstream: str = DEFAULT_UPSTREAM
    jobs_socket: str = JOBS_SOCKET
    control_socket: str = CONTROL_SOCKET
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES

    def __post_init__(self) -> None:
        parsed = urlparse(self.upstream)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.username or parsed.password:
            raise SettingsError(f"upstream: must be an http(s) URL without credentials, got {self.upstream!r}")
        if not isinstance(self.max_request_bytes, int) or self.max_request_bytes < 1024:
            raise SettingsError("max_request_bytes: must be an integer of at least 1024")
        for name in ("credentials_file", "jobs_socket", "control_socket"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.startswith("/"):
                raise SettingsError(f"{name}: must be an absolute path, got {value!r}")


def load_settings(path: Path) -> GatewaySettings:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SettingsError(f"{path}: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SettingsError(f"{path}: not valid TOML: {error}") from None
    known = {f.name for f in fields(GatewaySettings)}
    unknown = sorted(set(document) - known)
    if unknown:
        raise SettingsError(f"{path}: unknown key(s): {', '.join(unknown)}")
    try:
        return GatewaySettings(**document)
    except SettingsError as error:
        raise SettingsError(f"{path}: {error}") from None
