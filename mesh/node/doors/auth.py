"""Who a session's user is, and what their token lets them do.

Without a secret or a key file the node is in local-development mode: the token is taken
as the user name. Otherwise only signed tokens with a finite `exp` still ahead and naming a
user in `sub` are accepted: one without a `kid` header signed with the cluster secret
(HS256), one with a `kid` by that key of the key file (token_keys.py). A node given an
audience or an issuer requires `aud` or `iss` to name it. The optional `rooms` and `ops`
claims narrow what the token may do (token_scope.py). Either way the name must be a valid
user name (names.py).
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.types import Options

from mesh.node.doors.token_keys import SECRET_BYTES_MIN, KeyFile
from mesh.node.doors.token_scope import UNSCOPED, ScopeError, TokenScope
from mesh.wire.names import USER_NAME_RULE, is_user_name

ALGORITHM: Final = "HS256"  # of tokens signed with the cluster secret
# How far the issuer's clock may run ahead of the node's before `nbf` or `iat` make a
# fresh token "not yet valid"; expiry gets no leeway, so a token never outlives `exp`.
CLOCK_LEEWAY_S: Final = 60.0
TIME_CLAIMS: Final = ("exp", "nbf", "iat")
# Seconds since the epoch beyond which a time claim is refused as not a time: 2**53 is the
# largest count a float holds exactly, some 285 million years away.
TIME_CLAIM_S_MAX: Final = 2**53
# The time claims are checked against the caller's clock (tests and the simulator control
# time), so PyJWT is told to leave them alone.
_DECODE_OPTIONS: Final[Options] = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}

SigningKey = bytes | RSAPrivateKey | Ed25519PrivateKey


class AuthError(Exception):
    """A token that names no user: missing, malformed, forged or expired."""


@dataclass(frozen=True, slots=True)
class Principal:
    """A user, and what the token they came with lets them do."""

    user: str
    scope: TokenScope = UNSCOPED


def load_secret(path: Path) -> bytes:
    secret = path.read_bytes().strip()
    if len(secret) < SECRET_BYTES_MIN:
        raise ValueError(f"{path}: a secret needs at least {SECRET_BYTES_MIN} bytes")
    return secret


def issue_token(
    key: SigningKey,
    user: str,
    ttl_s: float,
    now_s: float,
    *,
    scope: TokenScope = UNSCOPED,
    kid: str | None = None,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """A token for `user`: HS256 with a secret, RS256 or EdDSA with a private key."""
    if not is_user_name(user):
        raise ValueError(f"a user name is {USER_NAME_RULE}: {user!r}")
    if not (math.isfinite(ttl_s) and ttl_s > 0):
        raise ValueError(f"a token lifetime must be a positive number of seconds: {ttl_s!r}")
    claims: dict[str, Any] = {"sub": user, "iat": int(now_s), "exp": int(now_s + ttl_s)}
    claims |= scope.claims()
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    algorithm = "RS256" if isinstance(key, RSAPrivateKey) else "EdDSA"
    if isinstance(key, bytes):
        algorithm = ALGORITHM
    headers = None if kid is None else {"kid": kid}
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


class Authenticator:
    def __init__(
        self,
        secret: bytes | None,
        *,
        keys: KeyFile | None = None,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        self.secret = secret
        self.keys = keys
        self.audience = audience
        self.issuer = issuer

    def principal_of(self, token: str, now_s: float) -> Principal:
        """Who a token names and what it lets them do, or AuthError saying why not."""
        if not token:
            raise AuthError(
                "a token is required: this mesh takes only signed tokens"
                if self.checks_tokens
                else "a user name is required (given as the token)"
            )
        if self.secret is None and self.keys is None:
            principal = Principal(token)
        else:
            principal = self._verified(token, now_s)
        if not is_user_name(principal.user):
            raise AuthError(f"a user name is {USER_NAME_RULE}")
        return principal

    @property
    def checks_tokens(self) -> bool:
        """False on a development node, where a token is only a user name."""
        return self.secret is not None or self.keys is not None

    def user_of(self, token: str, now_s: float) -> str:
        return self.principal_of(token, now_s).user

    def _verified(self, token: str, now_s: float) -> Principal:
        required = ["sub", "exp"]
        required += ["aud"] * (self.audience is not None) + ["iss"] * (self.issuer is not None)
        try:
            key, algorithm = self._key_of(token, now_s)
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options=_DECODE_OPTIONS | {"require": required},
            )
            scope = TokenScope.from_claims(claims)
        except (jwt.InvalidTokenError, ScopeError) as error:
            raise AuthError(f"invalid token: {_in_words(error)}") from error
        _check_times(claims, now_s)
        subject = claims["sub"]
        if not isinstance(subject, str):
            raise AuthError("invalid token: sub must be a string")
        return Principal(subject, scope)

    def _key_of(self, token: str, now_s: float) -> tuple[bytes | jwt.PyJWK, str]:
        """The key to check a token with, by the `kid` of its header."""
        kid = jwt.get_unverified_header(token).get("kid")
        if kid is None:
            if self.secret is None:
                raise jwt.InvalidTokenError("the token names no key (kid)")
            return self.secret, ALGORITHM
        key = None if self.keys is None or not isinstance(kid, str) else self.keys.key(kid, now_s)
        if key is None:
            raise jwt.InvalidTokenError(f"no key here has the kid {str(kid)[:80]!r}")
        return key, key.algorithm_name


def _in_words(error: jwt.InvalidTokenError | ScopeError) -> str:
    """What was wrong with a token, in a sentence rather than the JWT library's words."""
    if isinstance(error, jwt.InvalidSignatureError):  # a DecodeError too: first
        return "its signature matches none of this mesh's keys (made for another mesh?)"
    if isinstance(error, jwt.DecodeError):
        return (
            "it is not a signed token (JWT): this mesh checks tokens, so ask its operator "
            "for one (`meshchat token`)"
        )
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"it has no {error.claim!r} claim"
    if isinstance(error, jwt.InvalidAudienceError):
        return "it is meant for another audience (aud)"
    if isinstance(error, jwt.InvalidIssuerError):
        return "another issuer made it (iss)"
    if isinstance(error, jwt.InvalidAlgorithmError):
        return "it is signed with an algorithm this mesh does not take"
    return str(error)


def _check_times(claims: dict[str, Any], now_s: float) -> None:
    times = {name: _claim_time(claims, name) for name in TIME_CLAIMS if name in claims}
    if times["exp"] <= now_s:
        raise AuthError("the token expired: ask for a new one")
    if times.get("nbf", now_s) > now_s + CLOCK_LEEWAY_S:
        raise AuthError("token not valid yet (nbf)")
    if times.get("iat", now_s) > now_s + CLOCK_LEEWAY_S:
        raise AuthError("token issued in the future (iat)")


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
