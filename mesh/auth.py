"""Who a session's user is: a JWT (HS256) when the cluster has a secret, else the token itself.

Without a secret the node is in local-development mode: the token is taken as the user
name, unchecked. With a secret, only tokens signed with it, unexpired and naming a user
in `sub`, are accepted.
"""

import re
from pathlib import Path
from typing import Final

import jwt

ALGORITHM: Final = "HS256"
USER_PATTERN: Final = re.compile(r"^[^\s\x00-\x1f]{1,64}$")
# Secrets shorter than this are guessable; HS256 wants at least its own 256 bits.
SECRET_BYTES_MIN: Final = 32


class AuthError(Exception):
    """A token that names no user: missing, malformed, forged or expired."""


def load_secret(path: Path) -> bytes:
    secret = path.read_bytes().strip()
    if len(secret) < SECRET_BYTES_MIN:
        raise ValueError(f"{path}: a secret needs at least {SECRET_BYTES_MIN} bytes")
    return secret


def issue_token(secret: bytes, user: str, ttl_s: float, now_s: float) -> str:
    if not USER_PATTERN.match(user):
        raise ValueError("a user name is 1 to 64 characters without spaces or control characters")
    claims = {"sub": user, "iat": int(now_s), "exp": int(now_s + ttl_s)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


class Authenticator:
    def __init__(self, secret: bytes | None) -> None:
        self.secret = secret

    def user_of(self, token: str, now_s: float) -> str:
        """The user a token names, or AuthError saying why not."""
        if not token:
            raise AuthError("a token is required")
        if self.secret is None:
            user = token
        else:
            try:
                claims = jwt.decode(
                    token,
                    self.secret,
                    algorithms=[ALGORITHM],
                    options={"require": ["sub", "exp"], "verify_exp": False},
                )
            except jwt.InvalidTokenError as error:
                raise AuthError(f"invalid token: {error}") from error
            # Expiry against the caller's clock, so tests and the simulator control time.
            if float(claims["exp"]) <= now_s:
                raise AuthError("token expired")
            user = str(claims["sub"])
        if not USER_PATTERN.match(user):
            raise AuthError(
                "a user name is 1 to 64 characters without spaces or control characters"
            )
        return user


def parse_duration(text: str) -> float:
    """'90s', '15m', '12h', '1d' or plain seconds, as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 12h, 1d)") from None
    if value <= 0:
        raise ValueError(f"a duration must be positive: {text!r}")
    return value
