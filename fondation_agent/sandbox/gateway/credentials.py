"""The Claude credential: read from `claude_credentials_file` (gateway.toml's `credentials_file`) by
the gateway alone, and the upstream's headers that carry it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

CREDENTIAL_VARIABLES = ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN")
API_KEY, OAUTH_TOKEN = CREDENTIAL_VARIABLES
OAUTH_BETA = "oauth-2025-04-20"  # the anthropic-beta value the Messages API needs with an OAuth token


class CredentialsError(Exception):
    """The credentials file gives no credential: one line naming the key (the process stops, exit 2)."""


def read_credentials(path: Path) -> dict[str, str]:
    """The credential variables of an env file (`NAME=value` lines, `#` comments, optional quotes)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not UTF-8 text"
        raise CredentialsError(f"claude_credentials_file: cannot read {path}: {reason}") from None
    found = {}
    for line in text.splitlines():
        name, sep, value = line.strip().removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if sep and name.strip() in CREDENTIAL_VARIABLES and value:
            found[name.strip()] = value
    if not found:
        raise CredentialsError(f"claude_credentials_file: {path} holds neither "
                               f"{' nor '.join(f'{n}=' for n in CREDENTIAL_VARIABLES)}")
    return found


def credential_headers(credential: Mapping[str, str]) -> dict[str, str]:
    """The upstream's authentication for a credential: an API key as `x-api-key`, else an OAuth
    token as a bearer (the caller adds OAUTH_BETA to `anthropic-beta`)."""
    if credential.get(API_KEY):
        return {"x-api-key": credential[API_KEY]}
    if credential.get(OAUTH_TOKEN):
        return {"authorization": f"Bearer {credential[OAUTH_TOKEN]}"}
    raise CredentialsError(f"the credential holds neither {API_KEY} nor {OAUTH_TOKEN}")
