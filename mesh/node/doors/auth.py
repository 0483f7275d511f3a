"""Who a session's user is: a JWT (HS256) when the cluster has a secret, else the token itself.

Without a secret the node is in local-development mode: the token is taken as the user
name. With a secret, only tokens signed with it, with a finite `exp` still ahead and naming
a user in `sub`, are accepted. Either way the name must be a valid user name (names.py).
"""

import math
from pathlib import Path
from typing import Any, Final

import jwt

from mesh.wire.names import USER_NAME_RULE, is_user_name

ALGORITHM: Final = "HS256"
# Secrets shorter than this are guessable; HS256 wants at least its own 256 bits.
SECRET_BYTES_MIN: Final = 32
# How far the issuer's clock may run ahead of the node's before `nbf` or `iat` make a
# fresh token "not yet valid"; expiry gets no leeway, so a token never outlives `exp`.
CLOCK_LEEWAY_S: Final = 60.0
TIME_CLAIMS: Final = ("exp", "nbf", "iat")
# Seconds since the epoch beyond which a time claim is refused as not a time: 2**53 is the
# largest count a float holds exactly, some 285 million years away.
TIME_CLAIM_S_MAX: Final = 2**53


class AuthError(Exception):
    """A token that names no user: missing, malformed, forged or expired."""


def load_secret(path: Path) -> bytes:
    secret = path.read_bytes().strip()
    if len(secret) < SECRET_BYTES_MIN:
        raise ValueError(f"{path}: a secret needs at least {SECRET_BYTES_MIN} bytes")
    return secret


def issue_token(secret: bytes, user: str, ttl_s: float, now_s: float) -> str:
    if not is_user_name(user):
        raise ValueError(f"a user name is {USER_NAME_RULE}: {user!r}")
    if not (math.isfinite(ttl_s) and ttl_s > 0):
        raise ValueError(f"a token lifetime must be a positive number of seconds: {ttl_s!r}")
    claims = {"sub": user, "iat": int(now_s), "exp": int(now_s + ttl_s)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


class Authenticator:
    def __init__(self, secret: bytes | None) -> None:
        self.secret = secret

    def user_of(self, token: str, now_s: float) -> str:
        """The user a token names, or AuthError saying why not."""
        if not token:
            raise AuthError("a token is required")
        user = token if self.secret is None else self._subject(token, now_s)
        if not is_user_name(user):
            raise AuthError(f"a user name is {USER_NAME_RULE}")
        return user

    def _subject(self, token: str, now_s: float) -> str:
        assert self.secret is not None
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                # The time claims are checked below, against the caller's clock, so tests
                # and the simulator control time.
                options={
                    "require": ["sub", "exp"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidTokenError as error:
            raise AuthError(f"invalid token: {error}") from error
        times = {name: _claim_time(claims, name) for name in TIME_CLAIMS if name in claims}
        if times["exp"] <= now_s:
            raise AuthError("token expired")
        if times.get("nbf", now_s) > now_s + CLOCK_LEEWAY_S:
            raise AuthError("token not valid yet (nbf)")
        if times.get("iat", now_s) > now_s + CLOCK_LEEWAY_S:
            raise AuthError("token issued in the future (iat)")
        subject = claims["sub"]
        if not isinstance(subject, str):
            raise AuthError("invalid token: sub must be a string")
        return subject


def _claim_time(claims: dict[str, Any], name: str) -> float:
    """A time claim as seconds: a finite JSON number; "inf", 1e400, NaN, bools are refused."""
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError(f"invalid token: {name} must be a number of seconds")
    # `not <=` also refuses NaN; the bound keeps float() of a huge JSON integer in range.
    if not abs(value) <= TIME_CLAIM_S_MAX:
        raise AuthError(f"invalid token: {name} must be a finite time")
    return float(value)


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
