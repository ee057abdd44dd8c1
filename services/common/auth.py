"""JWT bearer tokens: HS256 with the shared secret, or RS256 with a configured public key."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

ROLES = ("member", "admin", "service")


class AuthError(Exception):
    """Raised for a token that does not authenticate (401) or authorise (403) a request."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Principal:
    subject: str
    role: str

    def require_role(self, *roles: str) -> None:
        if self.role not in roles:
            raise AuthError(403, "forbidden", f"this needs the role {' or '.join(roles)}")

    def require_member_access(self, member_id: str) -> None:
        """Members may only see and act for themselves; admin and services for anyone."""
        if self.role == "member" and self.subject != member_id:
            raise AuthError(403, "forbidden", "a member token may only act for its own member_id")


def mint_token(secret: str, subject: str, role: str, ttl_seconds: int = 3600) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    now = int(time.time())
    claims = {"sub": subject, "role": role, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, secret, algorithm="HS256")


class TokenVerifier:
    """Checks bearer tokens; a token that passed is remembered until it expires.

    A member's app sends the same token with every request, and checking its signature
    (PyJWT parses the key every time) was an eighth of the redemption API's CPU under load.
    A remembered token is the whole token string, signature included, so a changed or
    forged one is never taken for it; its expiry is checked again on every use.
    """

    remembered_at_most = 50_000  # tokens; about 30 MB at most

    def __init__(self, secret: str, public_key: str | None = None) -> None:
        # With a public key configured only RS256 is accepted: no one can mint with the secret.
        self._key = public_key or secret
        self._algorithms = ["RS256"] if public_key else ["HS256"]
        self._passed: dict[str, tuple[Principal, float]] = {}

    def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise AuthError(401, "unauthorized", "missing Authorization: Bearer token")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError(401, "unauthorized", "Authorization must be 'Bearer <token>'")
        passed = self._passed.get(token)
        if passed is not None:
            principal, expires_at = passed
            if time.time() < expires_at:
                return principal
            del self._passed[token]
            raise AuthError(401, "unauthorized", "token expired")
        principal, expires_at = self._check(token)
        if len(self._passed) >= self.remembered_at_most:
            del self._passed[next(iter(self._passed))]  # the oldest
        self._passed[token] = (principal, expires_at)
        return principal

    def _check(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token, self._key, algorithms=self._algorithms, options={"require": ["sub", "role", "exp"]}
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "unauthorized", "token expired") from None
        except jwt.PyJWTError as exc:
            raise AuthError(401, "unauthorized", f"invalid token: {exc}") from None
        role, subject = claims.get("role"), claims.get("sub")
        if role not in ROLES or not isinstance(subject, str) or not subject:
            raise AuthError(401, "unauthorized", "token has no valid sub and role")
        return Principal(subject=subject, role=role), float(claims["exp"])
