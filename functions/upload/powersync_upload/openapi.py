"""The OpenAPI document of the upload API, generated from the handler's Powertools resolver.

The request and response schemas come from the contract's pydantic models through
``app.get_openapi_json_schema``; this module adds what the resolver cannot know (title, version,
servers, the bearer token on ``POST /api/data``, ``Retry-After`` on 503, the request keys' aliases),
drops the 422 answer Powertools documents for every validated route (the handler answers a malformed
body with 400) and restores the exact 64-bit integer bounds that Powertools' schema model rounds to
floats.

``python -m powersync_upload.openapi [PATH]`` writes it (default: ``openapi.json`` at the project
root, which is committed; a test fails when it differs from the generated one). ``serve`` also
answers ``GET /openapi.json`` with it.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

TITLE = "PowerSync upload backend"
VERSION = "0.1.0"
"""The API version; keep it equal to ``version`` in pyproject.toml."""
DESCRIPTION = (
    "Applies PowerSync client upload batches (the reference write API's `transactions`, or the SDK's "
    "`CrudEntry.toJSON()` list as `batch`) to SQL Server, PostgreSQL, MySQL/MariaDB or SQLite: one "
    "database transaction per client transaction, one result per transaction. 200 only after COMMIT; "
    "503 with Retry-After for temporary failures; 400 malformed envelope; 401 missing or invalid token; "
    "413 body over the size cap."
)
SERVERS = [
    {"url": "http://127.0.0.1:3000", "description": "local: make serve"},
    {
        "url": "https://{apiId}.execute-api.{region}.amazonaws.com",
        "description": "deployed HttpApi (the stack's ApiUrl output)",
        "variables": {"apiId": {"default": "abc123defg"}, "region": {"default": "us-east-1"}},
    },
]
BEARER = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "JWT",
    "description": "The token the client uses for the PowerSync Service; its `sub` is the caller.",
}
DEFAULT_PATH = Path(__file__).resolve().parents[3] / "openapi.json"
_INT64_MAX, _INT64_MIN = 2**63 - 1, -(2**63)
_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError", "ResponseValidationError")


def _without_unused_validation_schemas(document: dict[str, Any]) -> None:
    """Drop Powertools' validation-error schemas once nothing outside them refers to them."""
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    others = {k: v for k, v in schemas.items() if k not in _VALIDATION_SCHEMAS}
    text = json.dumps([document.get("paths", {}), others])
    if not any(f"#/components/schemas/{name}" in text for name in _VALIDATION_SCHEMAS):
        for name in _VALIDATION_SCHEMAS:
            schemas.pop(name, None)


def _exact_int64_bounds(node: Any) -> None:
    """Powertools' schema model holds ``maximum``/``minimum`` as floats, which turns the contract's
    64-bit bounds (``2**63 - 1``) into ``9.223372036854776e+18`` (that is ``2**63``); put the exact
    integers back so the document does not allow ids the handler rejects."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            if node.get("maximum") == float(_INT64_MAX):
                node["maximum"] = _INT64_MAX
            if node.get("minimum") == float(_INT64_MIN):
                node["minimum"] = _INT64_MIN
        for value in node.values():
            _exact_int64_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _exact_int64_bounds(value)


def _document_aliases(document: dict[str, Any]) -> None:
    """The request models accept aliases (``type`` for ``table``, ``data``/``opData`` for ``op_data``,
    ``tx_id`` for ``transaction_id``...); the generated schema names one of each. Add the others as
    optional properties with the same schema, so the document describes every key the handler reads."""
    from pydantic import AliasChoices, BaseModel

    from . import contract

    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    for name, schema in schemas.items():
        model = getattr(contract, name, None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        properties = schema.get("properties", {})
        for field_name, info in model.model_fields.items():
            if not isinstance(info.validation_alias, AliasChoices):
                continue
            choices = [c for c in info.validation_alias.choices if isinstance(c, str)]
            documented = next((c for c in [field_name, *choices] if c in properties), None)
            if documented is None:
                continue
            for alias in choices:
                if alias not in properties:
                    properties[alias] = {**properties[documented], "description": f"alias of `{documented}`"}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document as a dict."""
    from .handler import UPLOAD_PATH, app

    document: dict[str, Any] = json.loads(
        app.get_openapi_json_schema(title=TITLE, version=VERSION, description=DESCRIPTION)
    )
    document["servers"] = SERVERS
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    upload = document["paths"][UPLOAD_PATH]["post"]
    upload["security"] = [{"bearerAuth": []}]
    unavailable = upload["responses"].get("503")
    if unavailable is not None:
        unavailable["headers"] = {
            "Retry-After": {"description": "seconds to wait before sending again", "schema": {"type": "integer"}}
        }
    document.setdefault("components", {})["securitySchemes"] = {"bearerAuth": BEARER}
    _without_unused_validation_schemas(document)
    _exact_int64_bounds(document)
    _document_aliases(document)
    return document


@lru_cache(maxsize=1)
def document_text() -> str:
    """The document as the committed file holds it: 2-space indented JSON and a final newline."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def write(path: Path = DEFAULT_PATH) -> Path:
    """Write the document to ``path``."""
    path.write_text(document_text(), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``python -m powersync_upload.openapi [PATH]``."""
    args = sys.argv[1:] if argv is None else argv
    written = write(Path(args[0]) if args else DEFAULT_PATH)
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
