"""In-handler token verification (``auth.verify_bearer``, DESIGN.md section 4): HS256 with a secret,
RS256/ES256 with a JWKS file, and every token the issue lists as a 401.

Keys are generated here with ``cryptography``; the JWKS is written to a temporary file. The last tests
go through the Lambda handler (``AUTH_MODE=handler``, SQLite) to check that a refused token answers
401 with nothing written and no results.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from powersync_upload import auth
from powersync_upload.auth import KeysUnavailable, Unauthorized, user_id, verify_bearer
from powersync_upload.handler import lambda_handler, set_runtime
from powersync_upload.local import LocalContext, schema_scripts
from powersync_upload.settings import Settings
from tests.support import ROOT, event, install_runtime, reset_database

SECRET = "unit-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz-0123456789-ABCDEF"  # 64+ bytes
ISSUER = "https://issuer.example.com/"
AUDIENCE = "powersync-upload"
SUB = "11111111-1111-1111-1111-111111111111"
KID = "key-1"
LEEWAY = 30


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims (sub, iat, exp in an hour); ``None`` removes a claim."""
    now = int(time.time())
    values: dict[str, Any] = {"sub": SUB, "iat": now, "exp": now + 3600, **overrides}
    return {k: v for k, v in values.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str | bytes = SECRET, headers: dict[str, Any] | None = None) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers)


def forged(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A token built by hand: HMAC-SHA256 with ``key`` (whatever it is), or unsigned when ``None``.
    PyJWT refuses to HMAC-sign with a PEM public key, which is exactly what the classic attack does."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    if key is None:
        return signing_input + "."
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def bearer(token: str) -> str:
    return f"Bearer {token}"


@pytest.fixture(autouse=True)
def _fresh_key_caches() -> Iterator[None]:
    auth._jwks_file.cache_clear()
    auth._jwks_client.cache_clear()
    yield
    auth._jwks_file.cache_clear()
    auth._jwks_client.cache_clear()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def jwks_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> Path:
    """A JWKS with the RSA key (``kid`` key-1, RS256) and the EC key (``kid`` ec-1, ES256)."""
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key()))
    ec_jwk = json.loads(ECAlgorithm.to_jwk(ec_key.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(
        json.dumps(
            {
                "keys": [
                    {**rsa_jwk, "kid": KID, "alg": "RS256", "use": "sig"},
                    {**ec_jwk, "kid": "ec-1", "alg": "ES256", "use": "sig"},
                ]
            }
        ),
        encoding="utf-8",
    )
    return path


def hs_settings(**extra: Any) -> Settings:
    return Settings(jwt_secret=SECRET, jwt_leeway_s=LEEWAY, **extra)


def jwks_settings(path: Path, **extra: Any) -> Settings:
    return Settings(jwt_jwks_file=path, jwt_leeway_s=LEEWAY, **extra)


def refused(header: str | None, settings: Settings) -> Unauthorized:
    with pytest.raises(Unauthorized) as caught:
        verify_bearer(header, settings)
    return caught.value


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# ---- accepted ------------------------------------------------------------------------------------


def test_hs256_token_is_accepted() -> None:
    assert verify_bearer(bearer(hs256(claims())), hs_settings())["sub"] == SUB


def test_scheme_is_case_insensitive_and_whitespace_is_tolerated() -> None:
    token = hs256(claims())
    assert verify_bearer(f"bearer {token}", hs_settings())["sub"] == SUB
    assert verify_bearer(f"  Bearer   {token}  ", hs_settings())["sub"] == SUB


def test_issuer_and_audience_are_accepted_when_they_match() -> None:
    settings = hs_settings(jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    assert verify_bearer(bearer(hs256(claims(iss=ISSUER, aud=AUDIENCE))), settings)["sub"] == SUB
    assert verify_bearer(bearer(hs256(claims(iss=ISSUER, aud=["other", AUDIENCE]))), settings)["sub"] == SUB


def test_rs256_token_from_the_jwks_file_is_accepted(jwks_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": KID})
    assert verify_bearer(bearer(token), jwks_settings(jwks_file))["sub"] == SUB


def test_rs256_token_without_kid_uses_the_first_key(jwks_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert verify_bearer(bearer(token), jwks_settings(jwks_file))["sub"] == SUB


def test_es256_token_from_the_jwks_file_is_accepted(jwks_file: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    token = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    assert verify_bearer(bearer(token), jwks_settings(jwks_file))["sub"] == SUB


@pytest.fixture
def jwks_url(jwks_file: Path) -> Iterator[tuple[str, list[str]]]:
    """The JWKS served over HTTP on a free local port; yields its URL and the list of requests."""
    hits: list[str] = []
    payload = jwks_file.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json", hits
    finally:
        server.shutdown()
        server.server_close()


def test_rs256_token_from_the_jwks_url_is_accepted_and_keys_are_cached(
    jwks_url: tuple[str, list[str]], rsa_key: rsa.RSAPrivateKey
) -> None:
    url, hits = jwks_url
    settings = Settings(jwt_jwks_url=url, jwt_leeway_s=LEEWAY)
    for _ in range(3):
        token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": KID})
        assert verify_bearer(bearer(token), settings)["sub"] == SUB
    assert len(hits) == 1


def test_hs256_signed_with_the_public_key_where_a_jwks_url_is_configured(
    jwks_url: tuple[str, list[str]], rsa_key: rsa.RSAPrivateKey
) -> None:
    url, _ = jwks_url
    token = forged({"alg": "HS256", "typ": "JWT", "kid": KID}, claims(), public_pem(rsa_key))
    refused(bearer(token), Settings(jwt_jwks_url=url, jwt_leeway_s=LEEWAY))


def test_unreachable_jwks_url_is_keys_unavailable_not_the_clients_fault() -> None:
    # Given: a JWKS URL nobody listens on
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(jwt_jwks_url=f"http://127.0.0.1:{port}/jwks.json", jwt_leeway_s=LEEWAY)
    # When/Then: verification fails as an outage (503 in the handler), not as a 401
    with pytest.raises(KeysUnavailable):
        verify_bearer(bearer(jwt.encode(claims(), "x" * 64, algorithm="HS256", headers={"kid": KID})), settings)


def test_small_clock_skew_is_accepted() -> None:
    # exp 10 s ago, nbf and iat 10 s ahead: within the 30 s leeway
    now = int(time.time())
    token = hs256(claims(exp=now - 10))
    assert verify_bearer(bearer(token), hs_settings())["sub"] == SUB
    token = hs256(claims(nbf=now + 10, iat=now + 10))
    assert verify_bearer(bearer(token), hs_settings())["sub"] == SUB


# ---- refused (401) -------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "   "])
def test_no_header(header: str | None) -> None:
    assert refused(header, hs_settings()).reason == "missing"


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "Token abc", "eyJhbGciOi"])
def test_not_a_bearer_header(header: str) -> None:
    refused(header, hs_settings())


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "a.b", "....", "e30.e30.", "eyJhbGciOiJIUzI1NiJ9.e30"])
def test_not_a_jwt(token: str) -> None:
    assert refused(bearer(token), hs_settings()).reason in ("malformed", "algorithm")


def test_bad_signature() -> None:
    error = refused(bearer(hs256(claims(), secret="another-secret-0123456789-abcdefghijklmnop")), hs_settings())
    assert error.reason == "signature"


def test_tampered_payload() -> None:
    header, _, signature = hs256(claims()).split(".")
    payload = _b64(json.dumps(claims(sub="22222222-2222-2222-2222-222222222222")).encode())
    refused(bearer(f"{header}.{payload}.{signature}"), hs_settings())


def test_expired() -> None:
    assert refused(bearer(hs256(claims(exp=int(time.time()) - 3600))), hs_settings()).reason == "expired"


def test_expired_beyond_leeway() -> None:
    refused(bearer(hs256(claims(exp=int(time.time()) - LEEWAY - 15))), hs_settings())


def test_not_yet_valid() -> None:
    assert refused(bearer(hs256(claims(nbf=int(time.time()) + LEEWAY + 60))), hs_settings()).reason == "not_yet_valid"


def test_issued_in_the_future() -> None:
    refused(bearer(hs256(claims(iat=int(time.time()) + LEEWAY + 60))), hs_settings())


def test_wrong_issuer() -> None:
    error = refused(bearer(hs256(claims(iss="https://evil.example.com/"))), hs_settings(jwt_issuer=ISSUER))
    assert error.reason == "issuer"


def test_missing_issuer_when_one_is_configured() -> None:
    refused(bearer(hs256(claims())), hs_settings(jwt_issuer=ISSUER))


def test_wrong_audience() -> None:
    assert refused(bearer(hs256(claims(aud="someone-else"))), hs_settings(jwt_audience=AUDIENCE)).reason == "audience"


def test_missing_audience_when_one_is_configured() -> None:
    refused(bearer(hs256(claims())), hs_settings(jwt_audience=AUDIENCE))


def test_no_sub() -> None:
    refused(bearer(hs256(claims(sub=None))), hs_settings())


@pytest.mark.parametrize("sub", [123, ["a"], {"id": "x"}])
def test_sub_that_is_not_a_string(sub: Any) -> None:
    refused(bearer(hs256(claims(sub=sub))), hs_settings())


def test_empty_sub_is_refused_by_user_id() -> None:
    # PyJWT accepts "" as a sub; user_id() (which the handler calls next) refuses it.
    verified = verify_bearer(bearer(hs256(claims(sub=""))), hs_settings())
    with pytest.raises(Unauthorized):
        user_id(verified)


def test_no_exp() -> None:
    refused(bearer(hs256(claims(exp=None))), hs_settings())


def test_alg_none_with_a_secret() -> None:
    refused(bearer(forged({"alg": "none", "typ": "JWT"}, claims(), None)), hs_settings())


def test_alg_none_with_a_jwks(jwks_file: Path) -> None:
    refused(bearer(forged({"alg": "none", "typ": "JWT", "kid": KID}, claims(), None)), jwks_settings(jwks_file))


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_other_hmac_algorithms_with_the_right_secret(alg: str) -> None:
    # Only HS256 is configured; a token with another algorithm is refused even with the right secret.
    refused(bearer(jwt.encode(claims(), SECRET, algorithm=alg)), hs_settings())


def test_hs256_token_where_a_jwks_is_configured(jwks_file: Path) -> None:
    refused(bearer(hs256(claims(), headers={"kid": KID})), jwks_settings(jwks_file))


@pytest.mark.parametrize("variant", ["pem", "pem-stripped", "der", "jwk-json"])
def test_hs256_signed_with_the_public_key_where_a_jwks_is_configured(
    jwks_file: Path, rsa_key: rsa.RSAPrivateKey, variant: str
) -> None:
    # The classic algorithm-confusion attack: the attacker knows the public key and uses its bytes as
    # the HMAC secret, hoping the server verifies "HS256" with whatever key it holds.
    pem = public_pem(rsa_key)
    keys = {
        "pem": pem,
        "pem-stripped": pem.strip(),
        "der": rsa_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "jwk-json": RSAAlgorithm.to_jwk(rsa_key.public_key()).encode(),
    }
    for kid in (KID, None):
        header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
        refused(bearer(forged(header, claims(), keys[variant])), jwks_settings(jwks_file))


def test_rs256_signed_by_another_key_with_our_kid(jwks_file: Path, other_rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(), other_rsa_key, algorithm="RS256", headers={"kid": KID})
    refused(bearer(token), jwks_settings(jwks_file))


def test_embedded_key_headers_are_not_trusted(jwks_file: Path, other_rsa_key: rsa.RSAPrivateKey) -> None:
    # jku/jwk/x5u in the header point at the attacker's key; only the configured JWKS counts.
    attacker_jwk = json.loads(RSAAlgorithm.to_jwk(other_rsa_key.public_key()))
    headers = {"kid": KID, "jku": "https://evil.example.com/jwks.json", "jwk": attacker_jwk, "x5u": "https://e/x"}
    token = jwt.encode(claims(), other_rsa_key, algorithm="RS256", headers=headers)
    refused(bearer(token), jwks_settings(jwks_file))


def test_unknown_kid(jwks_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "not-ours"})
    assert refused(bearer(token), jwks_settings(jwks_file)).reason == "unknown_key"


# A token whose alg does not fit the key it selects made PyJWT raise TypeError, which escaped as a 500
# until "auth: any verification error is a 401" (commit 6f91a31); these keep it a 401.


def test_rs256_token_with_the_ec_kid(jwks_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "ec-1"})
    refused(bearer(token), jwks_settings(jwks_file))


def test_es256_token_with_the_rsa_kid(jwks_file: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    token = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": KID})
    refused(bearer(token), jwks_settings(jwks_file))


def test_es256_token_without_kid_where_the_first_key_is_rsa(
    jwks_file: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    # No kid needed: anyone can send this header to a deployment whose JWKS starts with an RSA key.
    refused(bearer(jwt.encode(claims(), ec_key, algorithm="ES256")), jwks_settings(jwks_file))


def test_expired_rs256(jwks_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 3600), rsa_key, algorithm="RS256", headers={"kid": KID})
    assert refused(bearer(token), jwks_settings(jwks_file)).reason == "expired"


def test_nothing_configured() -> None:
    assert refused(bearer(hs256(claims())), Settings()).reason == "not_configured"


def test_messages_never_echo_the_token(jwks_file: Path) -> None:
    for token in ["VALUE-LEAK-TOKEN-1234", hs256(claims(exp=1)), hs256(claims(), secret="x" * 40)]:
        for settings in (hs_settings(), jwks_settings(jwks_file)):
            message = str(refused(bearer(token), settings))
            assert token not in message and "VALUE-LEAK" not in message


# ---- through the handler: 401, nothing written, no results ---------------------------------------


@pytest.fixture
def handler_db(tmp_path: Path) -> Iterator[Path]:
    url = reset_database("sqlite", schema_scripts("sqlite"), tmp_path)
    rt = install_runtime(url, ROOT / "functions" / "upload" / "upload.yaml", jwt_secret=SECRET, jwt_leeway_s=LEEWAY)
    yield Path(url.removeprefix("sqlite:///"))
    rt.db.discard()
    set_runtime(None)


PUT_LIST = {
    "batch": [
        {
            "op_id": 1,
            "op": "PUT",
            "type": "lists",
            "id": "a0000000-0000-4000-8000-000000000001",
            "tx_id": 1,
            "data": {"name": "n"},
        }
    ]
}


def _counts(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        lists = conn.execute("SELECT COUNT(*) FROM lists").fetchone()[0]
        errors = conn.execute("SELECT COUNT(*) FROM powersync_upload_errors").fetchone()[0]
    return int(lists), int(errors)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="no header"),
        pytest.param("Bearer not-a-jwt", id="not a JWT"),
        pytest.param(bearer(hs256(claims(), secret="wrong-secret-0123456789-abcdefghijklmn")), id="bad signature"),
        pytest.param(bearer(hs256(claims(exp=int(time.time()) - 3600))), id="expired"),
        pytest.param(bearer(hs256(claims(nbf=int(time.time()) + 3600))), id="not yet valid"),
        pytest.param(bearer(hs256(claims(sub=None))), id="no sub"),
        pytest.param(bearer(hs256(claims(sub=""))), id="empty sub"),
        pytest.param(bearer(hs256(claims(exp=None))), id="no exp"),
        pytest.param(bearer(forged({"alg": "none", "typ": "JWT"}, claims(), None)), id="alg none"),
    ],
)
def test_refused_token_answers_401_and_writes_nothing(handler_db: Path, header: str | None) -> None:
    out = lambda_handler(event(json.dumps(PUT_LIST), header), LocalContext())  # type: ignore[arg-type]
    assert out["statusCode"] == 401
    assert out["headers"].get("WWW-Authenticate", "").startswith("Bearer")
    body = json.loads(out["body"])
    assert set(body) == {"message"}
    assert _counts(handler_db) == (0, 0)


def test_key_type_mismatch_through_the_handler_is_401(
    handler_db: Path, jwks_file: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    install_runtime(f"sqlite:///{handler_db}", ROOT / "functions" / "upload" / "upload.yaml", jwt_jwks_file=jwks_file)
    header = bearer(jwt.encode(claims(), ec_key, algorithm="ES256"))
    out = lambda_handler(event(json.dumps(PUT_LIST), header), LocalContext())  # type: ignore[arg-type]
    assert out["statusCode"] == 401
    assert _counts(handler_db) == (0, 0)


def test_valid_token_through_the_handler_writes(handler_db: Path) -> None:
    out = lambda_handler(event(json.dumps(PUT_LIST), bearer(hs256(claims()))), LocalContext())  # type: ignore[arg-type]
    assert out["statusCode"] == 200
    assert _counts(handler_db) == (1, 0)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        pytest.param(None, "missing", id="no header"),
        pytest.param(bearer(hs256(claims(), secret="wrong-secret-0123456789-abcdefghijklmn")), "signature", id="sig"),
        pytest.param(bearer(hs256(claims(exp=int(time.time()) - 3600))), "expired", id="expired"),
        pytest.param(bearer(hs256(claims(nbf=int(time.time()) + 3600))), "not_yet_valid", id="nbf"),
        pytest.param(bearer(hs256(claims(iss="https://evil.example.com/"))), "issuer", id="issuer"),
        pytest.param(bearer(hs256(claims(iss=ISSUER, aud="someone-else"))), "audience", id="audience"),
    ],
)
def test_a_401_logs_its_reason_code_and_answers_a_bare_message(
    handler_db: Path, header: str | None, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given: a handler that checks issuer and audience
    install_runtime(
        f"sqlite:///{handler_db}",
        ROOT / "functions" / "upload" / "upload.yaml",
        jwt_secret=SECRET,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    # When: a refused token arrives
    out = lambda_handler(event(json.dumps(PUT_LIST), header), LocalContext())  # type: ignore[arg-type]
    # Then: the client learns nothing but 401; the operator's log line names the reason
    assert out["statusCode"] == 401
    assert json.loads(out["body"]) == {"message": Unauthorized.ANSWER}
    lines = [r for r in caplog.records if r.getMessage() == "unauthorized"]
    assert [r.__dict__["reason"] for r in lines] == [reason]


def test_a_jwks_outage_answers_503_with_retry_after(handler_db: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Given: a JWKS URL nobody listens on
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    install_runtime(
        f"sqlite:///{handler_db}",
        ROOT / "functions" / "upload" / "upload.yaml",
        jwt_jwks_url=f"http://127.0.0.1:{port}/jwks.json",
    )
    token = jwt.encode(claims(), "x" * 64, algorithm="HS256", headers={"kid": KID})
    # When: a request arrives
    out = lambda_handler(event(json.dumps(PUT_LIST), bearer(token)), LocalContext())  # type: ignore[arg-type]
    # Then: 503 with Retry-After (the device keeps its token and its queue), logged as jwks_unavailable
    assert out["statusCode"] == 503
    assert int(out["headers"]["Retry-After"]) >= 1
    assert [r.__dict__["reason"] for r in caplog.records if "keys unavailable" in r.getMessage()] == [
        "jwks_unavailable"
    ]
    assert _counts(handler_db) == (0, 0)
