"""The keys a node checks tokens with: a JWK Set file (RFC 7517), re-read when it changes.

Each key names its `kid`; a token's header names the key that signed it. Several keys are
accepted at once, so keys rotate without a restart: add the new key to the file, issue
tokens under its kid, and remove the old key once the last token it signed has expired.
HS256 secrets (`oct`), RS256 public keys (`RSA`) and EdDSA public keys (`OKP`, Ed25519)
are taken; a file holding a private key is refused, as the nodes only verify.
"""

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import jwt

log = logging.getLogger(__name__)

KEY_ALGORITHMS: Final = frozenset({"HS256", "RS256", "EdDSA"})
KEY_FILE_BYTES_MAX: Final = 1 << 20
KEYS_MAX: Final = 64
KEY_ID_LENGTH_MAX: Final = 128
# Secrets shorter than this are guessable; HS256 wants at least its own 256 bits.
SECRET_BYTES_MIN: Final = 32
RSA_BITS_MIN: Final = 2048
# How often a node looks whether the key file changed: a rotated key counts within it.
KEYS_RECHECK_S: Final = 1.0
# Coarser than any file system's time stamps: a file older than this changed only if its
# stat did.
KEY_FILE_SETTLED_S: Final = 2.0
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi"})


class KeyFileError(ValueError):
    """A key file that is not a JWK Set of keys this node can verify with."""


def read_key_set(path: Path) -> dict[str, jwt.PyJWK]:
    """The keys of a JWK Set file by key id, or KeyFileError saying what is wrong."""
    try:
        with path.open("rb") as file:
            raw = file.read(KEY_FILE_BYTES_MAX + 1)
    except OSError as error:
        raise KeyFileError(f"{path}: {error.strerror or error}") from error
    if len(raw) > KEY_FILE_BYTES_MAX:
        raise KeyFileError(f"{path}: larger than {KEY_FILE_BYTES_MAX} bytes")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise KeyFileError(f"{path}: not JSON: {error}") from error
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not 0 < len(entries) <= KEYS_MAX:
        raise KeyFileError(f'{path}: a JWK Set is {{"keys": [1-{KEYS_MAX} keys]}}')
    keys: dict[str, jwt.PyJWK] = {}
    for index, entry in enumerate(entries):
        key = _key(entry, f"{path}: key {index}")
        if key.key_id in keys:
            raise KeyFileError(f"{path}: kid {key.key_id!r} is given twice")
        keys[str(key.key_id)] = key
    return keys


def _key(entry: object, where: str) -> jwt.PyJWK:
    if not isinstance(entry, dict):
        raise KeyFileError(f"{where}: not a JSON object")
    kid = entry.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= KEY_ID_LENGTH_MAX:
        raise KeyFileError(f"{where}: needs a kid of 1-{KEY_ID_LENGTH_MAX} characters")
    if _PRIVATE_MEMBERS & entry.keys():
        raise KeyFileError(f"{where} ({kid}): a private key; give the public key only")
    try:
        key = jwt.PyJWK(entry)
    except Exception as error:
        raise KeyFileError(f"{where} ({kid}): {error or type(error).__name__}") from error
    if key.algorithm_name not in KEY_ALGORITHMS:
        raise KeyFileError(
            f"{where} ({kid}): {key.algorithm_name} is not one of {sorted(KEY_ALGORITHMS)}"
        )
    if key.algorithm_name == "HS256" and len(key.key) < SECRET_BYTES_MIN:
        raise KeyFileError(f"{where} ({kid}): a secret needs at least {SECRET_BYTES_MIN} bytes")
    if key.algorithm_name == "RS256" and key.key.key_size < RSA_BITS_MIN:
        raise KeyFileError(f"{where} ({kid}): an RSA key needs at least {RSA_BITS_MIN} bits")
    return key


@dataclass
class KeyFile:
    """A key file's keys as they are now: re-read when its size or time changed, and
    kept as they were when the new file is no good (said once in the log)."""

    path: Path
    keys: dict[str, jwt.PyJWK] = field(init=False)
    _signature: tuple[int, ...] = field(init=False)
    _checked_at: float = field(init=False, default=float("-inf"))
    _last_problem: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        try:
            self._signature = self._stat()
        except OSError as error:
            raise KeyFileError(f"{self.path}: {error.strerror or error}") from error
        self.keys = read_key_set(self.path)  # a bad file at start is the operator's error

    def key(self, kid: str, now_s: float) -> jwt.PyJWK | None:
        if abs(now_s - self._checked_at) >= KEYS_RECHECK_S:
            self._checked_at = now_s
            self._reload_if_changed()
        return self.keys.get(kid)

    def _reload_if_changed(self) -> None:
        try:
            signature = self._stat()
            # A rewrite within the file system's time resolution of the last read may
            # keep every field of the stat: a file changed that lately is read again.
            settled = time.time() - signature[0] / 1e9 > KEY_FILE_SETTLED_S
            if signature == self._signature and settled:
                return
            self.keys = read_key_set(self.path)
        except (OSError, KeyFileError) as error:
            if str(error) != self._last_problem:
                kept = len(self.keys)
                log.warning("token keys: keeping the %d keys read before: %s", kept, error)
                self._last_problem = str(error)
            return
        self._signature = signature
        self._last_problem = None
        log.info("token keys: read %d keys from %s", len(self.keys), self.path)

    def _stat(self) -> tuple[int, ...]:
        stat = os.stat(self.path)
        return stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_size
