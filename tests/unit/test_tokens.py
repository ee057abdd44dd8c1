"""Bearer tokens: who is authenticated (401) and who may act for whom (403)."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.common.auth import AuthError, Principal, TokenVerifier, mint_token

SECRET = "a-test-secret-that-is-at-least-32-bytes"


def bearer(token: str) -> str:
    return f"Bearer {token}"


def failure(verifier: TokenVerifier, header: str | None) -> int:
    with pytest.raises(AuthError) as caught:
        verifier.verify(header)
    return caught.value.status


def test_minted_token_authenticates_its_subject_and_role() -> None:
    principal = TokenVerifier(SECRET).verify(bearer(mint_token(SECRET, "m0000042", "member")))
    assert principal == Principal("m0000042", "member")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Token abc",
        bearer("not-a-jwt"),
        bearer(mint_token("some-other-secret-of-32-bytes-or-more", "m1", "member")),
        bearer(mint_token(SECRET, "m1", "member", ttl_seconds=-1)),
        bearer(jwt.encode({"sub": "m1", "exp": int(time.time()) + 60}, SECRET, "HS256")),  # no role
        bearer(jwt.encode({"sub": "m1", "role": "root", "exp": int(time.time()) + 60}, SECRET, "HS256")),
        bearer(jwt.encode({"sub": "m1", "role": "member"}, SECRET, "HS256")),  # never expires
    ],
)
def test_missing_forged_expired_or_incomplete_tokens_are_401(header: str | None) -> None:
    assert failure(TokenVerifier(SECRET), header) == 401


def test_member_may_act_only_for_itself_and_admin_for_anyone() -> None:
    Principal("m1", "member").require_member_access("m1")
    Principal("admin", "admin").require_member_access("m1")
    with pytest.raises(AuthError) as caught:
        Principal("m2", "member").require_member_access("m1")
    assert caught.value.status == 403
    with pytest.raises(AuthError) as caught:
        Principal("m1", "member").require_role("admin", "service")
    assert caught.value.status == 403


def test_with_a_public_key_only_rs256_tokens_signed_by_its_private_key_pass() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    verifier = TokenVerifier(SECRET, public_key=public_pem)
    claims = {"sub": "redemption", "role": "service", "exp": int(time.time()) + 60}
    assert verifier.verify(bearer(jwt.encode(claims, private, "RS256"))) == Principal("redemption", "service")
    # The shared secret no longer mints anything, and the public key is not an HMAC key.
    assert failure(verifier, bearer(mint_token(SECRET, "redemption", "service"))) == 401
    assert failure(verifier, bearer(jwt.encode(claims, public_pem.encode()[:64], "HS256"))) == 401


def test_a_token_that_passed_once_still_expires_on_time(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = TokenVerifier(SECRET)
    token = mint_token(SECRET, "m1", "member", ttl_seconds=60)
    assert verifier.verify(bearer(token)) == Principal("m1", "member")
    assert verifier.verify(bearer(token)) == Principal("m1", "member")  # remembered
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 61)
    assert failure(verifier, bearer(token)) == 401


def test_a_remembered_token_with_another_signature_is_still_forged() -> None:
    verifier = TokenVerifier(SECRET)
    token = mint_token(SECRET, "m1", "member")
    verifier.verify(bearer(token))
    header, payload, signature = token.split(".")
    forged_payload = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"m1"', b'"m2"')
    ).decode()
    assert failure(verifier, bearer(f"{header}.{forged_payload}.{signature}")) == 401
    tampered = ("B" if signature[0] == "A" else "A") + signature[1:]
    assert failure(verifier, bearer(f"{header}.{payload}.{tampered}")) == 401


def test_remembered_tokens_are_bounded_oldest_first() -> None:
    verifier = TokenVerifier(SECRET)
    verifier.remembered_at_most = 2
    tokens = [mint_token(SECRET, f"m{i}", "member") for i in range(3)]
    for token in tokens:
        verifier.verify(bearer(token))
    assert list(verifier._passed) == tokens[1:]
