"""API keys: where they come from (`TRIPTYCH_API_KEYS`, `auth.api_keys_file`) and how one is checked.

Keys are kept only as SHA-256 digests and compared with `hmac.compare_digest` against every key
(equal-length digests, no early exit), so neither a key's length nor which key matched leaks through
timing. Nothing here logs or formats a key: `repr` says how many keys there are, errors name the file
and the line, never the text on it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from triptych.config import ConfigError

API_KEYS_ENV = "TRIPTYCH_API_KEYS"  # comma-separated keys the server accepts
API_KEY_ENV = "TRIPTYCH_API_KEY"  # the one key a client (CLI, Python client, load generator) sends
BEARER = "bearer "


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def bearer_token(authorization: str | None) -> str | None:
    """The token in an ``Authorization: Bearer <token>`` value (HTTP header or gRPC metadata), else None."""
    if not authorization or authorization[: len(BEARER)].lower() != BEARER:
        return None
    return authorization[len(BEARER):].strip() or None


@dataclass(frozen=True)
class ApiKeys:
    """The accepted keys (as digests). No keys means authentication is off."""

    digests: tuple[bytes, ...] = field(default=(), repr=False)
    sources: tuple[str, ...] = ()  # where they came from, e.g. ("2 from TRIPTYCH_API_KEYS",)

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def accepts(self, token: str | None) -> bool:
        """Whether `token` is one of the keys; compared in constant time against every key."""
        if token is None:
            return False
        candidate, matched = _digest(token), False
        for digest in self.digests:
            matched |= hmac.compare_digest(candidate, digest)
        return matched

    def authorizes(self, authorization: str | None) -> bool:
        """Whether a request with this ``Authorization`` value may pass (always, when auth is off)."""
        return not self.enabled or self.accepts(bearer_token(authorization))

    def __repr__(self) -> str:
        return f"ApiKeys({len(self.digests)} keys: {', '.join(self.sources) or 'off'})"


def load_api_keys(api_keys_file: Path | None, environ: Mapping[str, str] = os.environ) -> ApiKeys:
    """Keys from the environment (`TRIPTYCH_API_KEYS`, comma-separated) and from `api_keys_file` (one key
    per line; blank lines and lines starting with ``#`` are skipped), together.

    Raises ConfigError naming the variable or the file (and line) when a source is set but unusable:
    an unreadable or empty file, a key with whitespace inside, a variable with only separators.
    """
    keys: list[str] = []
    sources: list[str] = []
    raw = environ.get(API_KEYS_ENV, "")
    if raw.strip():
        from_env = [key.strip() for key in raw.split(",") if key.strip()]
        _check_keys(from_env, API_KEYS_ENV, lambda i: f"item {i + 1}")
        keys += from_env
        sources.append(f"{len(from_env)} from {API_KEYS_ENV}")
    if api_keys_file is not None:
        from_file = _read_key_file(Path(api_keys_file))
        keys += from_file
        sources.append(f"{len(from_file)} from {api_keys_file}")
    return ApiKeys(tuple(dict.fromkeys(_digest(key) for key in keys)), tuple(sources))


def _read_key_file(path: Path) -> list[str]:
    source = f"auth.api_keys_file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"auth.api_keys_file: cannot read the file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, ["auth.api_keys_file: not UTF-8 text"]) from None
    numbered = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)]
    kept = [(number, line) for number, line in numbered if line and not line.startswith("#")]
    if not kept:
        raise ConfigError(source, ["auth.api_keys_file: no keys in the file (one key per line)"])
    lines = {index: number for index, (number, _) in enumerate(kept)}
    _check_keys([line for _, line in kept], source, lambda i: f"line {lines[i]}")
    return [line for _, line in kept]


def _check_keys(keys: list[str], source: str, where) -> None:
    if not keys:
        raise ConfigError(source, [f"{API_KEYS_ENV}: set but holds no key (comma-separated keys)"])
    problems = [f"{where(i)}: a key must be printable ASCII without spaces" for i, key in enumerate(keys)
                if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key)]
    if problems:
        raise ConfigError(source, problems)
