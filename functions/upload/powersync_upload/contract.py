"""The wire contract of DESIGN.md section 2: both request shapes, their aliases, and the response.

Shape A is the PowerSync reference write API (``{"transactions": [{"crud": [...]}]}``); shape B is the
SDK's own ``CrudEntry.toJSON()`` list (``{"batch": [...]}``), where consecutive entries with the same
``tx_id`` form one transaction. Both become a list of :class:`Transaction`, which is all the engine
sees. Unknown keys are ignored (newer SDKs add ``old`` and ``metadata``).
"""

from __future__ import annotations

import dataclasses
import json
import operator
import sys
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import CoreSchema, core_schema

from .errors import ErrorCode, FatalOpError, Reason

OpKind = Literal["PUT", "PATCH", "DELETE"]
OP_KINDS = ("PUT", "PATCH", "DELETE")


REFERENCE_MAX_TRANSACTIONS = 50
"""The reference write API's ``maxItems`` for shape A ``transactions``: a request over it (and over
``max_transactions``) is a 400, as there; within it, transactions past ``max_transactions`` are
``not_attempted`` (shared case 023; DESIGN section 2)."""


def _known_kind(value: Any) -> Any:
    if isinstance(value, str) and value not in OP_KINDS:
        raise ValueError("op must be 'PUT', 'PATCH' or 'DELETE'")
    return value


EntryOp = Annotated[Any, AfterValidator(_known_kind), WithJsonSchema({"type": "string", "enum": list(OP_KINDS)})]
"""An entry's ``op`` as sent. A string other than the three kinds is a 400, as the reference write
API's schema enum has it (a connector that invents an op is broken whatever the data: shared case
023); a value that is not a string (a number, ``null``) is ``INVALID_DATA`` for its own transaction
(:func:`entry_problem`), never a 400 for the request, like a non-string ``id`` or ``table``."""

EntryText = Annotated[Any, WithJsonSchema({"type": "string", "minLength": 1})]
"""An entry's ``id`` or ``table`` as sent. Documented as a non-empty string (lone UTF-16 surrogates
allowed, as JavaScript strings hold them); anything else is ``INVALID_DATA`` for its own transaction
(:func:`entry_problem`): an app once wrote an integer id (powersync.dart issue 137)."""


Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
"""op_id and tx_id are SQLite 64-bit integers on the device."""


def _one_shape(data: Any) -> Any:
    if isinstance(data, dict) and "transactions" in data and "batch" in data:
        raise ValueError('send either "transactions" or "batch", not both')
    return data


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class CrudA(_Lenient):
    """One operation in shape A (reference write API)."""

    op: EntryOp
    table: EntryText = Field(validation_alias=AliasChoices("table", "type"))
    id: EntryText
    op_data: dict[str, Any] | None = Field(default=None, validation_alias=AliasChoices("op_data", "opData", "data"))
    previous_values: dict[str, Any] | None = Field(
        default=None, validation_alias=AliasChoices("previous_values", "previousValues", "old")
    )
    metadata: Any = None
    op_id: Int64 | None = None
    transaction_id: Int64 | None = Field(default=None, validation_alias=AliasChoices("transaction_id", "tx_id"))


_SHARED_FIELDS = ("op", "table", "type")
"""Fields with few distinct values (the kind, the table name): one string object each, shared by
every entry, instead of the copy the JSON parser makes per entry (about 100 bytes an entry)."""


_intern = sys.intern
"""One string object per distinct value of a :data:`_SHARED_FIELDS` field (text only)."""


def _validated_as(model: type[BaseModel], slotted: type[Any], handler: GetCoreSchemaHandler) -> CoreSchema:
    """The pydantic schema of ``slotted``: validated (and documented in OpenAPI) as ``model``, then
    its fields copied into a ``slotted`` dataclass (:data:`_SHARED_FIELDS` interned) and the model
    instance dropped."""
    names = [f.name for f in dataclasses.fields(slotted)]
    fields = operator.attrgetter(*names)
    shared = [index for index, name in enumerate(names) if name in _SHARED_FIELDS]

    def build(validated: BaseModel) -> Any:
        values = list(fields(validated))
        for index in shared:
            value = values[index]
            if type(value) is str:
                values[index] = _intern(value)
        return slotted(*values)

    return core_schema.no_info_after_validator_function(build, handler.generate_schema(model))


@dataclass(slots=True)
class EntryA:
    """One validated shape A operation, as :class:`CrudA` validates it but held in a slotted object:
    a pydantic model costs about 1 KiB per instance (its ``__dict__`` and fields-set), which at the
    body cap (tens of thousands of operations) is tens of MiB. Its fields are :class:`CrudA`'s, by name
    (``op``, ``table`` and ``id`` as sent: :func:`entry_problem` judges them). Not frozen: read once by
    :func:`to_upload` and dropped, and a frozen dataclass's ``__init__`` costs five times as much (2 us
    against 0.35 us per entry)."""

    op: Any
    table: Any
    id: Any
    op_data: dict[str, Any] | None
    previous_values: dict[str, Any] | None
    metadata: Any
    op_id: int | None
    transaction_id: int | None

    __get_pydantic_core_schema__ = classmethod(lambda cls, source, handler: _validated_as(CrudA, cls, handler))


class TransactionA(_Lenient):
    """One client transaction in shape A."""

    transaction_id: Int64 | None = Field(default=None, validation_alias=AliasChoices("transaction_id", "tx_id"))
    crud: list[EntryA]


class UploadRequestA(_Lenient):
    """Shape A: ``{"transactions": [...], "client_id"?}``; 1 to ``max_transactions`` transactions."""

    transactions: list[TransactionA] = Field(min_length=1)
    client_id: str | None = None

    _one_shape = model_validator(mode="before")(_one_shape)

    def __repr__(self) -> str:  # cheap, and never shows submitted values (Powertools logs route args)
        return f"UploadRequestA(<{len(self.transactions)} transactions>)"


class CrudB(_Lenient):
    """One ``CrudEntry.toJSON()`` object (shape B)."""

    op_id: Int64 | None = None
    op: EntryOp
    type: EntryText = Field(validation_alias=AliasChoices("type", "table"))
    id: EntryText
    tx_id: Int64 | None = Field(default=None, validation_alias=AliasChoices("tx_id", "transaction_id"))
    data: dict[str, Any] | None = Field(default=None, validation_alias=AliasChoices("data", "op_data", "opData"))
    old: dict[str, Any] | None = Field(
        default=None, validation_alias=AliasChoices("old", "previous_values", "previousValues")
    )
    metadata: Any = None


@dataclass(slots=True)
class EntryB:
    """One validated ``CrudEntry``, as :class:`CrudB` validates it but held in a slotted object (see
    :class:`EntryA`). Its fields are :class:`CrudB`'s, by name (``op``, ``type`` and ``id`` as sent)."""

    op_id: int | None
    op: Any
    type: Any
    id: Any
    tx_id: int | None
    data: dict[str, Any] | None
    old: dict[str, Any] | None
    metadata: Any

    __get_pydantic_core_schema__ = classmethod(lambda cls, source, handler: _validated_as(CrudB, cls, handler))


class UploadRequestB(_Lenient):
    """Shape B: ``{"batch": [CrudEntry...], "client_id"?}``; no transaction cap."""

    batch: list[EntryB]
    client_id: str | None = None

    _one_shape = model_validator(mode="before")(_one_shape)

    def __repr__(self) -> str:  # cheap, and never shows submitted values (Powertools logs route args)
        return f"UploadRequestB(<{len(self.batch)} entries>)"


UploadRequest = Annotated[UploadRequestA | UploadRequestB, Field(union_mode="left_to_right")]


@dataclass(slots=True)
class Operation:
    """One CrudEntry, shape-independent. Not frozen (one is built per entry, and a frozen dataclass's
    ``__init__`` costs several times as much); nothing changes it once built.

    Attributes:
        op: ``PUT``, ``PATCH`` or ``DELETE``.
        table: the client table name.
        id: the client row id, as sent.
        data: the column values (``None`` for DELETE).
        op_id: the client's op_id, when sent.
        old: the previous values the client table tracks (``trackPrevious``), when sent.
        metadata: the entry's ``metadata`` (``trackMetadata``), when sent.
    """

    op: OpKind
    table: str
    id: str
    data: dict[str, Any] | None
    op_id: int | None = None
    old: dict[str, Any] | None = None
    metadata: Any = None


@dataclass(frozen=True)
class Transaction:
    """One client transaction: operations in queue order, applied all or nothing.

    Attributes:
        operations: the operations, in queue order.
        tx_id: the client's transaction id, when sent.
        refused: ``(operation index, error)`` when the transaction is fatal before anything is tried:
            an entry whose ``op``, ``table`` or ``id`` is not of the allowed kind, or a transaction
            too large for the body cap (:func:`limit_size`). The engine answers it ``fatal_error``
            (errors table, ledger and ``on_fatal_error`` as for any fatal result) without SQL.
    """

    operations: tuple[Operation, ...]
    tx_id: int | None = None
    refused: tuple[int, FatalOpError] | None = None


@dataclass(frozen=True)
class Upload:
    """A parsed request: its transactions and which shape it came in (``A`` or ``B``).

    Attributes:
        transactions: the transactions to attempt, in request order.
        shape: ``A`` (reference write API) or ``B`` (``CrudEntry.toJSON()`` list).
        client_id: the request's ``client_id``, when sent.
        not_attempted: how many transactions after ``transactions`` the request also held and that
            are answered ``not_attempted`` unseen (shape A past ``max_transactions``, or past the body
            cap): the connector sends them again in its next request (DESIGN.md section 2).
    """

    transactions: list[Transaction]
    shape: Literal["A", "B"]
    client_id: str | None = None
    not_attempted: int = 0


def _entry_text(value: Any) -> str:
    """``table``/``id`` as the engine and the errors table hold them: the string as sent, else its JSON
    text (``3479`` for an integer id), so the fatal result and the errors-table row can name it."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def entry_problem(op: Any, table: Any, row_id: Any) -> FatalOpError | None:
    """Why one entry can never be applied whatever the database holds, or ``None``: an ``op`` other
    than ``PUT``/``PATCH``/``DELETE``, a ``table`` or ``id`` that is not a non-empty string
    (``INVALID_DATA``; ``details.field`` names the key, ``details.reason`` is ``type`` for a value
    that is not a string, ``format`` for an empty string or an unknown kind)."""
    if type(op) is str and op in OP_KINDS and type(table) is str and table and type(row_id) is str and row_id:
        return None  # the common case, without building the loop below
    table_name = table if isinstance(table, str) and table else None
    for name, value in (("op", op), ("table", table), ("id", row_id)):
        if not isinstance(value, str):
            return FatalOpError(ErrorCode.INVALID_DATA, table=table_name, field=name, reason=Reason.TYPE)
        if not value or (name == "op" and value not in OP_KINDS):
            return FatalOpError(ErrorCode.INVALID_DATA, table=table_name, field=name, reason=Reason.FORMAT)
    return None


def _operation(op: Any, table: Any, row_id: Any, data: Any, op_id: Any, old: Any, metadata: Any) -> Operation:
    kind: OpKind = op if op in OP_KINDS else "PATCH"  # a refused entry's kind is never used: its transaction is fatal
    return Operation(
        kind, _entry_text(table), _entry_text(row_id), None if kind == "DELETE" else (data or {}), op_id, old, metadata
    )


def _transaction(entries: list[tuple[Operation, FatalOpError | None]], tx_id: int | None) -> Transaction:
    refused = next(((index, problem) for index, (_, problem) in enumerate(entries) if problem is not None), None)
    return Transaction(tuple(operation for operation, _ in entries), tx_id, refused)


def to_upload(request: UploadRequestA | UploadRequestB, max_transactions: int) -> Upload:
    """Turn a validated request into transactions.

    Shape A transactions past ``max_transactions`` are not attempted (``Upload.not_attempted``): the
    connector sends them again, so a cap below its batch size slows it down instead of blocking it.
    An entry that :func:`entry_problem` refuses makes its own transaction fatal (``Transaction.refused``).
    """
    if isinstance(request, UploadRequestA):
        kept = request.transactions[:max_transactions]
        transactions = [
            _transaction(
                [
                    (
                        _operation(c.op, c.table, c.id, c.op_data, c.op_id, c.previous_values, c.metadata),
                        entry_problem(c.op, c.table, c.id),
                    )
                    for c in tx.crud
                ],
                tx.transaction_id,
            )
            for tx in kept
        ]
        return Upload(transactions, "A", request.client_id, len(request.transactions) - len(kept))
    return Upload(group_batch(request.batch), "B", request.client_id)


def group_batch(batch: list[EntryB]) -> list[Transaction]:
    """Shape B: consecutive entries with the same ``tx_id`` form one transaction; no ``tx_id``, its own."""
    transactions: list[Transaction] = []
    current: list[tuple[Operation, FatalOpError | None]] = []
    current_tx: int | None = None
    for entry in batch:
        operation = _operation(entry.op, entry.type, entry.id, entry.data, entry.op_id, entry.old, entry.metadata)
        item = (operation, entry_problem(entry.op, entry.type, entry.id))
        if current and entry.tx_id is not None and entry.tx_id == current_tx:
            current.append(item)
            continue
        if current:
            transactions.append(_transaction(current, current_tx))
        current, current_tx = [item], entry.tx_id
    if current:
        transactions.append(_transaction(current, current_tx))
    return transactions


def entry_sizes(body: Any) -> list[int]:
    """Each entry's size in bytes (compact JSON, UTF-8), in request order across transactions: shape A
    ``transactions[*].crud[*]``, shape B ``batch[*]``. Only computed for a body over the cap.

    Args:
        body: the parsed request body (already validated as one of the shapes).
    """
    if "transactions" in body:
        entries = [entry for tx in body["transactions"] for entry in tx.get("crud", ())]
    else:
        entries = body.get("batch", [])
    return [
        len(json.dumps(e, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8", "surrogatepass"))
        for e in entries
    ]


def limit_size(upload: Upload, sizes: list[int], max_body_bytes: int) -> Upload:
    """A request whose body is over ``MAX_BODY_BYTES`` (but that the function could still read),
    answered per transaction so no connector blocks on it (DESIGN.md section 1): a transaction larger
    than the cap by itself is fatal ``TOO_LARGE``; in shape A, once the transactions kept reach the cap,
    the rest are not attempted (sent again in a later request); shape B (whose clients complete a whole
    200) applies all the others.

    Args:
        upload: the request as :func:`to_upload` gave it.
        sizes: :func:`entry_sizes` of the body.
        max_body_bytes: the cap, bytes.
    """
    kept: list[Transaction] = []
    total, cursor = 0, 0
    for position, transaction in enumerate(upload.transactions):
        size = sum(sizes[cursor : cursor + len(transaction.operations)])
        cursor += len(transaction.operations)
        if size > max_body_bytes:
            error = FatalOpError(ErrorCode.TOO_LARGE, limit="MAX_BODY_BYTES")
            kept.append(dataclasses.replace(transaction, refused=(0, error)))
            continue
        if upload.shape == "A" and total + size > max_body_bytes and total > 0:
            rest = len(upload.transactions) - position
            return dataclasses.replace(upload, transactions=kept, not_attempted=upload.not_attempted + rest)
        total += size
        kept.append(transaction)
    return dataclasses.replace(upload, transactions=kept)


# ---- results -------------------------------------------------------------------------------------


class OperationWarning(BaseModel):
    """A non-fatal note on a committed transaction: ``ROW_NOT_FOUND`` (PATCH of a missing row),
    ``CONFLICT_SKIPPED`` (``on_conflict: skip`` dropped that operation; ``details`` as a ``CONFLICT``'s),
    ``CONFLICT_UNCHECKED`` (the entry carried no previous values and the table's ``missing_previous``
    is ``apply``: written without its conflict check or delta; ``details``: table, column),
    ``ALREADY_APPLIED`` (a replay answered from the ledger: alone, without an operation index)."""

    model_config = ConfigDict(title="Warning")

    operation_index: int | None = None
    code: Literal["ROW_NOT_FOUND", "CONFLICT_SKIPPED", "CONFLICT_UNCHECKED", "ALREADY_APPLIED"]
    details: dict[str, Any] | None = None


class FailedOperation(BaseModel):
    """The operation that made a transaction fatal; ``details`` holds names, never values."""

    error_code: str
    message: str
    operation_index: int
    op_id: Int64 | None = None
    details: dict[str, Any] = Field(default_factory=dict)


def _always_sent(*names: str) -> ConfigDict:
    """Fields with a default that every response still carries: required in the published schema, as
    the reference write API's OpenAPI requires them (``status``; ``requires_client_handling``)."""
    return ConfigDict(json_schema_extra={"required": list(names)})


class SuccessResult(BaseModel):
    """The transaction was committed."""

    model_config = _always_sent("status")

    status: Literal["success"] = "success"
    warnings: list[OperationWarning] | None = None


class FatalResult(BaseModel):
    """The transaction can never be applied and was rolled back; the client should complete it."""

    model_config = _always_sent("status", "requires_client_handling", "message", "failed_operation")

    status: Literal["fatal_error"] = "fatal_error"
    requires_client_handling: bool = False
    message: str
    failed_operation: FailedOperation


class RetryableResult(BaseModel):
    """A temporary failure; nothing of the transaction was kept; the client keeps it queued."""

    model_config = _always_sent("status", "message", "retry_after_ms")

    status: Literal["retryable_error"] = "retryable_error"
    message: str
    retry_after_ms: int


class NotAttemptedResult(BaseModel):
    """Not tried (an earlier transaction stopped the request, or it was past ``max_transactions`` or
    the body cap); the client sends it again."""

    model_config = _always_sent("status")

    status: Literal["not_attempted"] = "not_attempted"


TransactionResult = Annotated[
    SuccessResult | FatalResult | RetryableResult | NotAttemptedResult, Field(discriminator="status")
]


class UploadResponse(BaseModel):
    """The body of a 200 (and of a 503): one result per transaction, in request order."""

    results: list[TransactionResult]

    def to_json(self) -> dict[str, Any]:
        """The JSON body, without absent optional keys."""
        return self.model_dump(mode="json", exclude_none=True)


class UnavailableResponse(BaseModel):
    """The body of a 503: a message the reference connectors show (``Failed to post transaction batch
    (503): <message>``) and, when the request was read, one result per transaction as in a 200
    (absent only when the failure came before the request could be read)."""

    message: str
    results: list[TransactionResult] | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON body, without absent optional keys."""
        return self.model_dump(mode="json", exclude_none=True)


class ErrorMessage(BaseModel):
    """The body of a 400, 401 or 413."""

    message: str
