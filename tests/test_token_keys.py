"""Tokens checked by key id against a JWK Set, with aud and iss, and scoped by the `rooms`
and `ops` claims: the authenticator and the key file, without a node."""

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any, get_args

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import HMACAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.utils import base64url_encode

from mesh.node.doors.auth import Authenticator, AuthError, issue_token
from mesh.node.doors.gateway import REQUEST_OPERATIONS, UNSCOPED_REQUESTS
from mesh.node.doors.token_keys import KEYS_RECHECK_S, KeyFile, KeyFileError, read_key_set
from mesh.node.doors.token_scope import TokenScope
from mesh.wire import protocol

NOW_S = 1_800_000_000.0
SECRET = b"cluster-secret-of-forty-bytes-----------"
HMAC_KEY = b"h" * 40
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def jwk(kid: str, material: Any) -> dict[str, Any]:
    if isinstance(material, bytes):
        found = HMACAlgorithm.to_jwk(material, as_dict=True)
    elif isinstance(material, rsa.RSAPublicKey):
        found = RSAAlgorithm.to_jwk(material, as_dict=True)
    else:
        found = OKPAlgorithm.to_jwk(material, as_dict=True)
    return {**found, "kid": kid}


def write_keys(path: Path, *keys: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"keys": list(keys)}))
    return path


@pytest.fixture
def key_file(tmp_path: Path) -> KeyFile:
    path = write_keys(
        tmp_path / "keys.json",
        jwk("h1", HMAC_KEY),
        jwk("r1", RSA_KEY.public_key()),
        jwk("e1", ED_KEY.public_key()),
    )
    return KeyFile(path)


def token(key: Any, kid: str | None, **options: Any) -> str:
    return issue_token(key, "bot", 600, NOW_S, kid=kid, **options)


def test_a_token_is_checked_with_the_key_its_kid_names(key_file: KeyFile) -> None:
    authenticator = Authenticator(SECRET, keys=key_file)
    for key, kid in ((HMAC_KEY, "h1"), (RSA_KEY, "r1"), (ED_KEY, "e1"), (SECRET, None)):
        assert authenticator.user_of(token(key, kid), NOW_S) == "bot", kid
    with pytest.raises(AuthError, match="no key here has the kid 'gone'"):
        authenticator.user_of(token(HMAC_KEY, "gone"), NOW_S)
    with pytest.raises(AuthError, match="signature matches none"):
        authenticator.user_of(token(SECRET, "h1"), NOW_S)  # h1's kid, another key
    with pytest.raises(AuthError, match="names no key"):
        Authenticator(None, keys=key_file).user_of(token(SECRET, None), NOW_S)


def test_a_key_answers_only_its_own_algorithm(key_file: KeyFile) -> None:
    # The classic confusion: the RSA public key's PEM used as an HMAC secret.
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = b".".join(
        base64url_encode(json.dumps(part).encode())
        for part in ({"alg": "HS256", "kid": "r1"}, {"sub": "bot", "exp": NOW_S + 60})
    )
    mac = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    forged = (signing_input + b"." + base64url_encode(mac)).decode()
    unsigned = jwt.encode({"sub": "bot", "exp": NOW_S + 60}, "", algorithm="none")
    authenticator = Authenticator(SECRET, keys=key_file)
    for bad in (forged, unsigned):
        with pytest.raises(AuthError, match="invalid token"):
            authenticator.user_of(bad, NOW_S)


def test_audience_and_issuer_are_required_once_a_node_names_them() -> None:
    authenticator = Authenticator(SECRET, audience="chat.example", issuer="https://id.example")
    good = token(SECRET, None, audience="chat.example", issuer="https://id.example")
    assert authenticator.user_of(good, NOW_S) == "bot"
    cases = {
        "no aud": token(SECRET, None, issuer="https://id.example"),
        "another aud": token(SECRET, None, audience="other", issuer="https://id.example"),
        "no iss": token(SECRET, None, audience="chat.example"),
        "another iss": token(SECRET, None, audience="chat.example", issuer="https://evil"),
    }
    for case, bad in cases.items():
        with pytest.raises(AuthError, match="invalid token"):
            authenticator.user_of(bad, NOW_S)
        assert case
    # A node that names no audience takes no token meant for one (PyJWT's rule, kept).
    with pytest.raises(AuthError, match="audience"):
        Authenticator(SECRET).user_of(token(SECRET, None, audience="chat.example"), NOW_S)


def test_keys_rotate_without_a_restart(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "keys.json", jwk("old", HMAC_KEY))
    keys = KeyFile(path)
    authenticator = Authenticator(None, keys=keys)
    fresh = b"n" * 40
    assert authenticator.user_of(token(HMAC_KEY, "old"), NOW_S) == "bot"
    write_keys(path, jwk("old", HMAC_KEY), jwk("new", fresh))
    os.utime(path, ns=(1, 1))  # a changed time even on a coarse clock
    later = NOW_S + KEYS_RECHECK_S
    assert authenticator.user_of(token(fresh, "new"), later) == "bot"
    assert authenticator.user_of(token(HMAC_KEY, "old"), later) == "bot"  # both at once
    write_keys(path, jwk("new", fresh))
    os.utime(path, ns=(2, 2))
    with pytest.raises(AuthError, match="no key here has the kid 'old'"):
        authenticator.user_of(token(HMAC_KEY, "old"), later + KEYS_RECHECK_S)
    # A broken file keeps the keys read before.
    path.write_text("{not json")
    os.utime(path, ns=(3, 3))
    assert authenticator.user_of(token(fresh, "new"), later + 2 * KEYS_RECHECK_S) == "bot"


@pytest.mark.parametrize(
    ("case", "document", "problem"),
    [
        ("not JSON", "{", "not JSON"),
        ("no keys", {"keys": []}, "a JWK Set is"),
        ("no kid", {"keys": [HMACAlgorithm.to_jwk(HMAC_KEY, as_dict=True)]}, "needs a kid"),
        ("kid twice", {"keys": [jwk("a", HMAC_KEY), jwk("a", HMAC_KEY)]}, "given twice"),
        ("short secret", {"keys": [jwk("a", b"short")]}, "at least 32 bytes"),
        (
            "private key",
            {"keys": [{**RSAAlgorithm.to_jwk(RSA_KEY, as_dict=True), "kid": "a"}]},
            "a private key",
        ),
        (
            "small RSA key",
            {
                "keys": [
                    jwk(
                        "a",
                        rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(),
                    )
                ]
            },
            "at least 2048 bits",
        ),
        ("another algorithm", {"keys": [{**jwk("a", HMAC_KEY), "alg": "HS512"}]}, "HS512"),
        ("alg none", {"keys": [{**jwk("a", HMAC_KEY), "alg": "none"}]}, "key 0"),
        ("junk key", {"keys": [{"kid": "a", "kty": "oct"}]}, "key 0"),
    ],
)
def test_a_key_file_the_node_cannot_verify_with_is_refused(
    tmp_path: Path, case: str, document: Any, problem: str
) -> None:
    path = tmp_path / "keys.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(KeyFileError, match=problem):
        read_key_set(path)
    assert case


def test_a_scope_narrows_a_token_to_rooms_and_operations() -> None:
    authenticator = Authenticator(SECRET)
    bot = TokenScope(rooms=("alerts-*", "ops"), ops=frozenset({"post"}))
    principal = authenticator.principal_of(token(SECRET, None, scope=bot), NOW_S)
    assert principal.scope == bot
    assert principal.scope.refusal("alerts-db", "post") is None
    assert principal.scope.refusal("ops", "post") is None
    assert principal.scope.refusal("lobby", "post") == "this token is not for room lobby"
    assert principal.scope.refusal("alerts-db", "read") == "this token may not read (it may post)"
    unscoped = authenticator.principal_of(token(SECRET, None), NOW_S).scope
    assert unscoped.unscoped and unscoped.refusal("anything", "moderate") is None


@pytest.mark.parametrize(
    "claims",
    [
        {"rooms": "alerts-*"},
        {"rooms": ["alerts-[ab]"]},
        {"rooms": [""]},
        {"rooms": ["x" * 65]},
        {"rooms": ["r"] * 65},
        {"rooms": [7]},
        {"ops": ["write"]},
        {"ops": "read"},
        {"ops": ["read"] * 5},
        {"ops": [None]},
        {"rooms": None},  # null is no "every room"
        {"ops": None},
    ],
)
def test_a_scope_claim_that_is_not_a_scope_refuses_the_token(claims: dict[str, Any]) -> None:
    signed = jwt.encode({"sub": "bot", "exp": NOW_S + 60, **claims}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match=r"invalid token: (rooms|ops|a room pattern)"):
        Authenticator(SECRET).user_of(signed, NOW_S)


def test_every_client_request_is_either_scoped_or_named_as_free_of_scope() -> None:
    requests = set(get_args(protocol.ClientMessage))
    assert requests == set(REQUEST_OPERATIONS) | UNSCOPED_REQUESTS
    assert not set(REQUEST_OPERATIONS) & UNSCOPED_REQUESTS
