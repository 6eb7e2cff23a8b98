"""The wire contract of DESIGN.md section 2: both request shapes, their aliases, and the response.

Shape A is the PowerSync reference write API (``{"transactions": [{"crud": [...]}]}``); shape B is the
SDK's own ``CrudEntry.toJSON()`` list (``{"batch": [...]}``), where consecutive entries with the same
``tx_id`` form one transaction. Both become a list of :class:`Transaction`, which is all the engine
sees. Unknown keys are ignored (newer SDKs add ``old`` and ``metadata``).
"""

from __future__ import annotations

import dataclasses
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

OpKind = Literal["PUT", "PATCH", "DELETE"]


def _client_text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


ClientText = Annotated[Any, AfterValidator(_client_text), WithJsonSchema({"type": "string", "minLength": 1})]
"""A non-empty string taken as sent, even with lone UTF-16 surrogates (JavaScript strings can hold
them; pydantic's ``str`` refuses them). Such an id or table name is then rejected for its own
operation (``INVALID_DATA`` / ``SCHEMA_MISMATCH``) instead of turning the whole request into a 400
that would block the upload queue."""


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

    op: OpKind
    table: ClientText = Field(validation_alias=AliasChoices("table", "type"))
    id: ClientText
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


def _shared(value: Any) -> Any:
    return sys.intern(value) if type(value) is str else value


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
            values[index] = _shared(values[index])
        return slotted(*values)

    return core_schema.no_info_after_validator_function(build, handler.generate_schema(model))


@dataclass(slots=True)
class EntryA:
    """One validated shape A operation, as :class:`CrudA` validates it but held in a slotted object:
    a pydantic model costs about 1 KiB per instance (its ``__dict__`` and fields-set), which at the
    body cap (tens of thousands of operations) is tens of MiB. Its fields are :class:`CrudA`'s, by name.
    Not frozen: read once by :func:`to_upload` and dropped, and a frozen dataclass's ``__init__`` costs
    five times as much (2 us against 0.35 us per entry)."""

    op: OpKind
    table: str
    id: str
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
    op: OpKind
    type: ClientText = Field(validation_alias=AliasChoices("type", "table"))
    id: ClientText
    tx_id: Int64 | None = Field(default=None, validation_alias=AliasChoices("tx_id", "transaction_id"))
    data: dict[str, Any] | None = Field(default=None, validation_alias=AliasChoices("data", "op_data", "opData"))
    old: dict[str, Any] | None = Field(
        default=None, validation_alias=AliasChoices("old", "previous_values", "previousValues")
    )
    metadata: Any = None


@dataclass(slots=True)
class EntryB:
    """One validated ``CrudEntry``, as :class:`CrudB` validates it but held in a slotted object (see
    :class:`EntryA`). Its fields are :class:`CrudB`'s, by name."""

    op_id: int | None
    op: OpKind
    type: str
    id: str
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


@dataclass(frozen=True, slots=True)
class Operation:
    """One CrudEntry, shape-independent.

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
    """One client transaction: operations in queue order, applied all or nothing."""

    operations: tuple[Operation, ...]
    tx_id: int | None = None


@dataclass(frozen=True)
class Upload:
    """A parsed request: its transactions and which shape it came in (``A`` or ``B``)."""

    transactions: list[Transaction]
    shape: Literal["A", "B"]
    client_id: str | None = None


class EnvelopeError(Exception):
    """The request envelope is malformed (400); the message says what is wrong, without values."""


def to_upload(request: UploadRequestA | UploadRequestB, max_transactions: int) -> Upload:
    """Turn a validated request into transactions.

    Raises:
        EnvelopeError: shape A with more than ``max_transactions`` transactions.
    """
    if isinstance(request, UploadRequestA):
        if len(request.transactions) > max_transactions:
            raise EnvelopeError(f"at most {max_transactions} transactions per request; got {len(request.transactions)}")
        transactions = [
            Transaction(
                operations=tuple(
                    Operation(
                        c.op,
                        c.table,
                        c.id,
                        None if c.op == "DELETE" else (c.op_data or {}),
                        c.op_id,
                        c.previous_values,
                        c.metadata,
                    )
                    for c in tx.crud
                ),
                tx_id=tx.transaction_id,
            )
            for tx in request.transactions
        ]
        return Upload(transactions, "A", request.client_id)
    return Upload(group_batch(request.batch), "B", request.client_id)


def group_batch(batch: list[EntryB]) -> list[Transaction]:
    """Shape B: consecutive entries with the same ``tx_id`` form one transaction; no ``tx_id``, its own."""
    transactions: list[Transaction] = []
    current: list[Operation] = []
    current_tx: int | None = None
    for entry in batch:
        operation = Operation(
            entry.op,
            entry.type,
            entry.id,
            None if entry.op == "DELETE" else (entry.data or {}),
            entry.op_id,
            entry.old,
            entry.metadata,
        )
        if current and entry.tx_id is not None and entry.tx_id == current_tx:
            current.append(operation)
            continue
        if current:
            transactions.append(Transaction(tuple(current), current_tx))
        current, current_tx = [operation], entry.tx_id
    if current:
        transactions.append(Transaction(tuple(current), current_tx))
    return transactions


# ---- results -------------------------------------------------------------------------------------


class OperationWarning(BaseModel):
    """A non-fatal note on a committed transaction: ``ROW_NOT_FOUND`` (PATCH of a missing row),
    ``CONFLICT_SKIPPED`` (``on_conflict: skip`` dropped that operation; ``details`` as a ``CONFLICT``'s),
    ``ALREADY_APPLIED`` (a replay answered from the ledger: alone, without an operation index)."""

    model_config = ConfigDict(title="Warning")

    operation_index: int | None = None
    code: Literal["ROW_NOT_FOUND", "CONFLICT_SKIPPED", "ALREADY_APPLIED"]
    details: dict[str, Any] | None = None


class FailedOperation(BaseModel):
    """The operation that made a transaction fatal; ``details`` holds names, never values."""

    error_code: str
    message: str
    operation_index: int
    op_id: Int64 | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class SuccessResult(BaseModel):
    """The transaction was committed."""

    status: Literal["success"] = "success"
    warnings: list[OperationWarning] | None = None


class FatalResult(BaseModel):
    """The transaction can never be applied and was rolled back; the client should complete it."""

    status: Literal["fatal_error"] = "fatal_error"
    requires_client_handling: bool = False
    message: str
    failed_operation: FailedOperation


class RetryableResult(BaseModel):
    """A temporary failure; nothing of the transaction was kept; the client keeps it queued."""

    status: Literal["retryable_error"] = "retryable_error"
    message: str
    retry_after_ms: int


class NotAttemptedResult(BaseModel):
    """Not tried because an earlier transaction stopped the request."""

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


class ErrorMessage(BaseModel):
    """The body of a 400, 401 or 413."""

    message: str
