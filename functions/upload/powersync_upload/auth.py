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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .settings import Settings

if TYPE_CHECKING:  # PyJWT (and cryptography) load only when the handler verifies tokens itself
    import jwt

_ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


class Unauthorized(Exception):
    """No usable identity (401). The answer is always the same bare message (nothing for an attacker to
    learn); :attr:`reason` is a short code for the operator's log line, never the token.

    Attributes:
        reason: ``missing``, ``malformed``, ``signature``, ``expired``, ``not_yet_valid``, ``issuer``,
            ``audience``, ``missing_claim``, ``algorithm``, ``unknown_key``, ``no_sub``,
            ``not_configured`` or ``no_claims`` (no authorizer claims in the event).
    """

    ANSWER = "missing or invalid token"

    def __init__(self, reason: str) -> None:
        super().__init__(self.ANSWER)
        self.reason = reason


class KeysUnavailable(Exception):
    """The token's verification keys cannot be read (JWKS URL unreachable or not a JWKS, JWKS file
    gone): not the client's fault, so the handler answers 503 and the device keeps its token. The log
    line's reason is ``jwks_unavailable``."""

    reason = "jwks_unavailable"


def claims_from_authorizer(event: dict[str, Any]) -> dict[str, Any]:
    """Claims the HttpApi JWT authorizer put in the event (payload v2)."""
    context = event.get("requestContext") or {}
    claims = ((context.get("authorizer") or {}).get("jwt") or {}).get("claims")
    if not isinstance(claims, dict):
        raise Unauthorized("no_claims")
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


def _url_key(token: str, url: str) -> Any:
    import jwt

    client = _jwks_client(url)
    try:
        client.get_signing_keys()  # cached for 5 minutes; fails when the endpoint is down or not a JWKS
    except jwt.PyJWKClientError as exc:
        raise KeysUnavailable from exc
    try:
        return client.get_signing_key_from_jwt(token).key
    except jwt.PyJWKClientConnectionError as exc:
        raise KeysUnavailable from exc
    except jwt.PyJWKClientError as exc:
        raise Unauthorized("unknown_key") from exc


def _file_key(token: str, path: Path) -> Any:
    import jwt

    kid = jwt.get_unverified_header(token).get("kid")
    try:
        keys = _jwks_file(str(path)).keys
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise KeysUnavailable from exc
    matching = [k for k in keys if kid is None or k.key_id == kid]
    if not matching:
        raise Unauthorized("unknown_key")
    return matching[0].key


def _key_for(token: str, settings: Settings) -> tuple[Any, list[str]]:
    if settings.jwt_jwks_url:
        return _url_key(token, settings.jwt_jwks_url), _ASYMMETRIC
    if settings.jwt_jwks_file:
        return _file_key(token, settings.jwt_jwks_file), _ASYMMETRIC
    if settings.jwt_secret:
        return settings.jwt_secret, ["HS256"]
    raise Unauthorized("not_configured")


def reason_of(exc: Exception) -> str:
    """The log reason code for a PyJWT verification error (see :class:`Unauthorized`)."""
    import jwt

    for kind, reason in (
        (jwt.ExpiredSignatureError, "expired"),
        (jwt.ImmatureSignatureError, "not_yet_valid"),
        (jwt.InvalidIssuedAtError, "not_yet_valid"),
        (jwt.InvalidIssuerError, "issuer"),
        (jwt.InvalidAudienceError, "audience"),
        (jwt.MissingRequiredClaimError, "missing_claim"),
        (jwt.InvalidSignatureError, "signature"),
        (jwt.InvalidAlgorithmError, "algorithm"),
        (jwt.DecodeError, "malformed"),
    ):
        if isinstance(exc, kind):
            return reason
    return "algorithm" if isinstance(exc, TypeError | jwt.InvalidKeyError) else "malformed"


def verify_bearer(authorization: str | None, settings: Settings) -> dict[str, Any]:
    """Verify an ``Authorization`` header value and return the token's claims.

    Raises:
        Unauthorized: no header, not a bearer JWT, bad signature, expired or not yet valid, wrong
            issuer or audience, ``alg: none``, or an HS256 token where an asymmetric key is configured;
            its ``reason`` says which.
        KeysUnavailable: the JWKS cannot be fetched or read (a 503, not the client's fault).
    """
    if not authorization or not authorization.strip():
        raise Unauthorized("missing")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("malformed")
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
    except (Unauthorized, KeysUnavailable):
        raise
    except Exception as exc:  # PyJWT raises TypeError when alg and key type disagree
        raise Unauthorized(reason_of(exc)) from exc


def user_id(claims: dict[str, Any]) -> str:
    """The ``sub`` claim.

    Raises:
        Unauthorized: ``sub`` is missing or empty.
    """
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("no_sub")
    return sub
