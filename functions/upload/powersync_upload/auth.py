"""Who is calling: the JWT ``sub``, from the HttpApi JWT authorizer's claims or verified here with PyJWT.

Deployed behind an HttpApi JWT authorizer (issuers with OIDC discovery and an RSA/EC JWKS), API
Gateway has already verified the token and passes its claims in
``requestContext.authorizer.jwt.claims``. Otherwise (``AUTH_MODE=handler``: HS256 development
tokens, Supabase's legacy secret, issuers without discovery, and always under ``serve``) the
handler verifies ``Authorization: Bearer <JWT>`` itself: signature, ``exp`` (required), ``nbf``,
``iss`` and ``aud`` when configured, with a small leeway; ``sub`` is required in both modes.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .config import Settings

if TYPE_CHECKING:  # PyJWT (and cryptography) load only when the handler verifies tokens itself
    import jwt

_ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


class Unauthorized(Exception):
    """No usable identity (401). The message is safe to return: it never echoes the token."""


def claims_from_authorizer(event: dict[str, Any]) -> dict[str, Any]:
    """Claims the HttpApi JWT authorizer put in the event (payload v2)."""
    context = event.get("requestContext") or {}
    claims = ((context.get("authorizer") or {}).get("jwt") or {}).get("claims")
    if not isinstance(claims, dict):
        raise Unauthorized("no verified token claims in the request")
    return claims


@lru_cache(maxsize=4)
def _jwks_client(url: str) -> jwt.PyJWKClient:
    import jwt

    return jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5)


@lru_cache(maxsize=4)
def _jwks_file(path: str) -> jwt.PyJWKSet:
    import jwt

    with open(path, encoding="utf-8") as handle:
        return jwt.PyJWKSet.from_dict(json.load(handle))


def forget_keys() -> None:
    """Drop the cached JWKS clients and key sets: the next token fetches them again (after a
    SnapStart restore, so no environment starts from keys or HTTP state frozen in the snapshot)."""
    _jwks_client.cache_clear()
    _jwks_file.cache_clear()


def _key_for(token: str, settings: Settings) -> tuple[Any, list[str]]:
    import jwt

    if settings.jwt_jwks_url or settings.jwt_jwks_file:
        kid = jwt.get_unverified_header(token).get("kid")
        if settings.jwt_jwks_url:
            return _jwks_client(settings.jwt_jwks_url).get_signing_key_from_jwt(token).key, _ASYMMETRIC
        keys = _jwks_file(str(settings.jwt_jwks_file)).keys
        matching = [k for k in keys if kid is None or k.key_id == kid]
        if not matching:
            raise Unauthorized("token signed with an unknown key")
        return matching[0].key, _ASYMMETRIC
    if settings.jwt_secret:
        return settings.jwt_secret, ["HS256"]
    raise Unauthorized("token verification is not configured (set JWT_SECRET, JWT_JWKS_URL or JWT_JWKS_FILE)")


def verify_bearer(authorization: str | None, settings: Settings) -> dict[str, Any]:
    """Verify an ``Authorization`` header value and return the token's claims.

    Raises:
        Unauthorized: no header, not a bearer JWT, bad signature, expired or not yet valid, wrong
            issuer or audience, ``alg: none``, or an HS256 token where an asymmetric key is configured.
    """
    if not authorization:
        raise Unauthorized("missing Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be 'Bearer <token>'")
    token = token.strip()
    import jwt

    try:
        key, algorithms = _key_for(token, settings)
        return jwt.decode(
            token,
            key,
            algorithms=algorithms,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway=settings.jwt_leeway_s,
            options={"require": ["exp", "sub"], "verify_aud": settings.jwt_audience is not None},
        )
    except Unauthorized:
        raise
    except Exception as exc:  # PyJWT raises TypeError when alg and key type disagree
        raise Unauthorized(_refusal(exc)) from exc


def _refusal(exc: Exception) -> str:
    """Which check a PyJWT error failed, for the 401 and the ``unauthorized`` log line (names of claims
    and settings only, never a token's or a setting's value); ``invalid token`` for anything else."""
    import jwt

    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token has no '{exc.claim}' claim"
    reasons: list[tuple[type[Exception], str]] = [
        (jwt.ExpiredSignatureError, "token expired"),
        (jwt.ImmatureSignatureError, "token is not valid yet"),
        (jwt.InvalidAudienceError, "token audience (aud) is not JWT_AUDIENCE"),
        (jwt.InvalidIssuerError, "token issuer (iss) is not JWT_ISSUER"),
        (jwt.InvalidSignatureError, "token signature does not verify"),
    ]
    return next((reason for kind, reason in reasons if isinstance(exc, kind)), "invalid token")


def user_id(claims: dict[str, Any]) -> str:
    """The ``sub`` claim.

    Raises:
        Unauthorized: ``sub`` is missing or empty.
    """
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("token has no 'sub' claim")
    return sub
