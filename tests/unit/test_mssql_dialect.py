"""SQL Server dialect: error classification with real pymssql exception objects, SQL text, URL, catalog."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pymssql
import pytest
from pymssql import _mssql

from powersync_upload.dialects import mssql
from powersync_upload.errors import ErrorCode, FatalOpError, Reason, RetryableError
from powersync_upload.schema import Column, Kind, TableSchema

# Realistic SQL Server message texts (sys.messages), with a submitted value where SQL Server puts one.
DEADLOCK = b"Transaction (Process ID 52) was deadlocked on lock resources with another process and has been chosen as the deadlock victim. Rerun the transaction."  # noqa: E501
NOT_NULL = (
    b"Cannot insert the value NULL into column 'name', table 'db.dbo.lists'; column does not allow nulls. INSERT fails."
)
FK_INSERT = b'The INSERT statement conflicted with the FOREIGN KEY constraint "FK_todos_lists". The conflict occurred in database "d", table "dbo.lists", column \'id\'.'  # noqa: E501
FK_DELETE = b'The DELETE statement conflicted with the REFERENCE constraint "FK_todos_lists". The conflict occurred in database "d", table "dbo.todos", column \'list_id\'.'  # noqa: E501
CHECK = b'The INSERT statement conflicted with the CHECK constraint "CK_todos_priority". The conflict occurred in database "d", table "dbo.todos", column \'priority\'.'  # noqa: E501
PK_DUP = b"Violation of PRIMARY KEY constraint 'PK_x'. Cannot insert duplicate key in object 'dbo.t'. The duplicate key value is (secret)."  # noqa: E501
INDEX_DUP = b"Cannot insert duplicate key row in object 'dbo.lists' with unique index 'ux_lists_owner_name'. The duplicate key value is (11111111-1111-1111-1111-111111111111, secret)."  # noqa: E501
TRUNCATED = (
    b"String or binary data would be truncated in table 'd.dbo.lists', column 'name'. Truncated value: 'secret'."
)

_PROGRAMMING = (102, 207, 208, 2812, 4104)
_INTEGRITY = (515, 547, 2601, 2627)


def after_execute(number: int, text: bytes = b"message") -> pymssql.Error:
    """What ``cursor.execute`` raises: the DB-API class pymssql picks by number, args ``(number, text)``."""
    if number in _PROGRAMMING:
        return pymssql.exceptions.ProgrammingError(number, text)
    if number in _INTEGRITY:
        return pymssql.exceptions.IntegrityError(number, text)
    return pymssql.exceptions.OperationalError(number, text)


def after_connect(number: int, text: bytes = b"message") -> pymssql.Error:
    """What ``pymssql.connect`` raises: ``OperationalError`` whose ``args[0]`` is ``(number, text)``."""
    return pymssql.exceptions.OperationalError((number, text))


class RaisedMSSQLDatabaseException(_mssql.MSSQLDatabaseException):
    """An ``MSSQLDatabaseException`` as ``_mssql.raise_MSSQLDatabaseException`` raises it.

    pymssql sets the read-only C fields ``number`` and ``text`` right after construction; Python
    cannot, and reading ``text`` of a bare ``MSSQLDatabaseException((n, b'...'),)`` dereferences a
    NULL pointer (segfault). So these two are provided from ``args``, exactly as pymssql fills them.
    """

    @property
    def number(self) -> int:  # type: ignore[override]
        return int(self.args[0][0])

    @property
    def text(self) -> bytes:  # type: ignore[override]
        return bytes(self.args[0][1])


SHAPES = {
    "execute": after_execute,
    "connect": after_connect,
    "_mssql": lambda number, text=b"message": RaisedMSSQLDatabaseException((number, text)),
}


@pytest.fixture(params=sorted(SHAPES))
def raised(request: pytest.FixtureRequest) -> Any:
    """Builds the error in each shape pymssql raises it."""
    return SHAPES[request.param]


def fatal(exc: BaseException) -> FatalOpError:
    result = mssql.classify(exc)
    assert isinstance(result, FatalOpError), result
    return result


def retryable(exc: BaseException) -> RetryableError:
    result = mssql.classify(exc)
    assert isinstance(result, RetryableError), result
    return result


# ---- retryable -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("number", "kind"), [(1205, "deadlock"), (1222, "lock_timeout")])
def test_deadlock_and_lock_timeout_are_retried_in_process(raised: Any, number: int, kind: str) -> None:
    # Given a deadlock victim or lock timeout error
    exc = raised(number, DEADLOCK if number == 1205 else b"Lock request time out period exceeded.")

    # When classified
    result = retryable(exc)

    # Then the engine may retry it itself
    assert result.in_process is True
    assert result.kind == kind
    assert result.number == number


@pytest.mark.parametrize("number", [40613, 40501, 4060, 233, 18456])
def test_transient_server_errors_are_retryable_by_the_client(raised: Any, number: int) -> None:
    # Given an unavailable database, throttling, a dropped login or a failed login (rotated secret)
    # When classified
    result = retryable(raised(number))

    # Then the client retries; the engine does not spin on it
    assert result.in_process is False
    assert result.number == number


def test_throttling_asks_the_client_to_wait_longer() -> None:
    # Given Azure SQL's "service is busy" / When classified / Then retry_after is longer than the default
    assert retryable(after_execute(40501)).retry_after_ms > retryable(after_execute(40613)).retry_after_ms


@pytest.mark.parametrize("number", [20009, 20003])
def test_db_lib_connection_errors_are_retryable_connection_failures(raised: Any, number: int) -> None:
    # Given a DB-Lib error (20009 unable to connect, 20003 connection timed out)
    # When classified
    result = retryable(raised(number, b"DB-Lib error message 20003, severity 6:\nAdaptive Server connection timed out"))

    # Then it is a retryable connection failure
    assert result.kind == "connection"
    assert result.in_process is False


@pytest.mark.parametrize("connect", [pymssql.connect, _mssql.connect], ids=["pymssql", "_mssql"])
def test_real_refused_connection_is_a_retryable_connection_failure(connect: Any) -> None:
    # Given the exception a real connect to a closed port raises (no server involved)
    with pytest.raises(pymssql.Error if connect is pymssql.connect else _mssql.MSSQLDatabaseException) as caught:
        connect(server="127.0.0.1", port="1", user="u", password="p")

    # When classified
    result = retryable(caught.value)

    # Then it is DB-Lib 20009, a retryable connection failure
    assert (result.kind, result.number) == ("connection", 20009)


def test_driver_error_without_a_number_is_a_retryable_connection_failure() -> None:
    # Given pymssql's InterfaceError on a closed connection (no SQL Server number)
    # When / Then it is a retryable connection failure
    assert retryable(pymssql.exceptions.InterfaceError("Connection is closed.")).kind == "connection"


# ---- fatal: constraints --------------------------------------------------------------------------


def test_515_is_not_null_with_the_column_from_the_message(raised: Any) -> None:
    # Given SQL Server's NOT NULL message / When classified
    result = fatal(raised(515, NOT_NULL))

    # Then it is NOT_NULL_VIOLATION naming the column
    assert result.code is ErrorCode.NOT_NULL_VIOLATION
    assert result.column == "name"
    assert result.number == 515


@pytest.mark.parametrize(
    ("text", "constraint"), [(FK_INSERT, "FK_todos_lists"), (FK_DELETE, "FK_todos_lists")], ids=["insert", "delete"]
)
def test_547_foreign_key_is_a_foreign_key_violation(raised: Any, text: bytes, constraint: str) -> None:
    # Given a FOREIGN KEY (insert) or REFERENCE (delete) conflict / When classified
    result = fatal(raised(547, text))

    # Then it is FOREIGN_KEY_VIOLATION naming the constraint
    assert result.code is ErrorCode.FOREIGN_KEY_VIOLATION
    assert result.constraint == constraint


def test_547_check_is_a_check_violation_with_constraint_and_column(raised: Any) -> None:
    # Given a CHECK conflict / When classified
    result = fatal(raised(547, CHECK))

    # Then it is CHECK_VIOLATION naming the constraint and the column
    assert result.code is ErrorCode.CHECK_VIOLATION
    assert result.constraint == "CK_todos_priority"
    assert result.column == "priority"


def test_547_foreign_key_whose_names_contain_check_is_still_a_foreign_key_violation() -> None:
    # Given a FOREIGN KEY conflict on a table called checklists
    text = (
        b'The INSERT statement conflicted with the FOREIGN KEY constraint "FK_items_checklists". '
        b'The conflict occurred in database "d", table "dbo.checklists", column \'id\'.'
    )

    # When classified
    result = fatal(after_execute(547, text))

    # Then the kind comes from "FOREIGN KEY constraint", not from the word "check" in a name
    assert result.code is ErrorCode.FOREIGN_KEY_VIOLATION


def test_547_foreign_key_does_not_report_the_other_tables_column_as_the_written_column() -> None:
    # Given an INSERT into todos with a list_id that does not exist: SQL Server names the *referenced*
    # table and column (dbo.lists, 'id'), not the column that was written
    # When classified
    result = fatal(after_execute(547, FK_INSERT))

    # Then no column is claimed (the engine would report it as todos.id, which the client did not get wrong)
    assert result.column is None


@pytest.mark.parametrize(
    ("number", "text", "constraint"), [(2627, PK_DUP, "PK_x"), (2601, INDEX_DUP, "ux_lists_owner_name")]
)
def test_duplicate_key_is_unique_violation_with_the_constraint(
    raised: Any, number: int, text: bytes, constraint: str
) -> None:
    # Given a duplicate key error (constraint 2627 or unique index 2601) / When classified
    result = fatal(raised(number, text))

    # Then it is UNIQUE_VIOLATION naming the constraint or index
    assert result.code is ErrorCode.UNIQUE_VIOLATION
    assert result.constraint == constraint
    assert result.number == number


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (2627, PK_DUP),
        (2601, INDEX_DUP),
        (2628, TRUNCATED),
        (245, b"Conversion failed when converting the nvarchar value 'secret' to data type int."),
    ],
    ids=["2627", "2601", "2628", "245"],
)
def test_message_and_details_never_echo_the_submitted_value(raised: Any, number: int, text: bytes) -> None:
    # Given a driver message carrying a submitted value ("secret")
    # When classified
    result = fatal(raised(number, text))

    # Then neither the message nor the details contain it
    assert "secret" not in result.message
    assert "secret" not in str(result.details())
    assert "secret" not in str(result)


def test_a_value_that_looks_like_a_column_clause_is_not_parsed_as_a_column() -> None:
    # Given a conversion error whose submitted value is "x', column 'secret" (SQL Server quotes it raw)
    text = b"Conversion failed when converting the nvarchar value 'x', column 'secret' to data type int."

    # When classified
    result = fatal(after_execute(245, text))

    # Then no part of the value becomes the reported column (245 never names a column)
    assert result.column is None
    assert "secret" not in str(result.details())


# ---- fatal: data and schema ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        (2628, Reason.TOO_LONG),
        (8152, Reason.TOO_LONG),
        (245, Reason.TYPE),
        (8114, Reason.TYPE),
        (8115, Reason.OUT_OF_RANGE),
        (241, Reason.FORMAT),
    ],
)
def test_conversion_and_truncation_errors_are_invalid_data(raised: Any, number: int, reason: Reason) -> None:
    # Given a conversion, overflow or truncation error / When classified
    result = fatal(raised(number))

    # Then it is INVALID_DATA with the matching reason
    assert result.code is ErrorCode.INVALID_DATA
    assert result.reason is reason
    assert result.details()["reason"] == reason.value


def test_2628_names_the_truncated_column() -> None:
    # Given SQL Server 2019's truncation message / When classified / Then the column is named
    assert fatal(after_execute(2628, TRUNCATED)).column == "name"


@pytest.mark.parametrize(
    ("number", "text"), [(207, b"Invalid column name 'nme'."), (208, b"Invalid object name 'dbo.lsts'.")]
)
def test_unknown_column_or_table_is_schema_mismatch(raised: Any, number: int, text: bytes) -> None:
    # Given an unknown column or object / When classified / Then SCHEMA_MISMATCH
    assert fatal(raised(number, text)).code is ErrorCode.SCHEMA_MISMATCH


def test_unknown_error_number_is_unclassified_with_the_number(raised: Any) -> None:
    # Given a RAISERROR from a trigger (50000) / When classified
    result = fatal(raised(50000, b"custom trigger message"))

    # Then it is UNCLASSIFIED_ERROR carrying the number, not the text
    assert result.code is ErrorCode.UNCLASSIFIED_ERROR
    assert result.details() == {"error_number": 50000}


@pytest.mark.parametrize("exc", [ValueError("x"), KeyError("k"), RuntimeError("boom")])
def test_non_pymssql_exception_is_not_classified(exc: BaseException) -> None:
    # Given an exception that does not come from the driver / When classified / Then None
    assert mssql.classify(exc) is None


# ---- SQL text ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "quoted"), [("lists", "[lists]"), ("a]b", "[a]]b]"), ("50%", "[50%%]"), ("a]%s", "[a]]%%s]")]
)
def test_quote_doubles_closing_bracket_and_percent(name: str, quoted: str) -> None:
    # Given a name / When quoted / Then ] and % cannot end the name or become a placeholder
    assert mssql.quote(name) == quoted


def test_upsert_sql_updates_with_a_key_range_lock_then_inserts() -> None:
    # Given a PUT writing name and setting note to NULL
    # When its SQL is built
    sql = mssql.upsert_sql("[dbo].[lists]", "[id]", ["[name]"], ["[note]"])

    # Then it is UPDATE WITH (UPDLOCK, SERIALIZABLE) ... IF @@ROWCOUNT = 0 INSERT, no MERGE
    assert sql == (
        "UPDATE [dbo].[lists] WITH (UPDLOCK, SERIALIZABLE) SET [name] = %s, [note] = NULL WHERE [id] = %s; "
        "IF @@ROWCOUNT = 0 INSERT INTO [dbo].[lists] ([id], [name]) VALUES (%s, %s)"
    )
    assert "MERGE" not in sql


def test_upsert_sql_with_nothing_to_update_inserts_only_when_missing() -> None:
    # Given a PUT of a row with only its key / When its SQL is built
    sql = mssql.upsert_sql("[lists]", "[id]", [], [])

    # Then an existing row is left alone and a missing one is inserted under a key-range lock
    assert sql == (
        "IF NOT EXISTS (SELECT 1 FROM [lists] WITH (UPDLOCK, SERIALIZABLE) WHERE [id] = %s) "
        "INSERT INTO [lists] ([id]) VALUES (%s)"
    )


class RecordingConnection:
    """A DB-API connection double that records what the dialect executes."""

    def __init__(self) -> None:
        self.executed: list[tuple[str, tuple[Any, ...]]] = []

    def cursor(self) -> RecordingConnection:
        return self

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        self.executed.append((sql, params))


def test_upsert_passes_one_parameter_per_placeholder_in_order() -> None:
    # Given a table and a PUT of two values and one NULL
    columns = {
        "id": Column("id", Kind.TEXT),
        "name": Column("name", Kind.TEXT),
        "amount": Column("amount", Kind.DECIMAL, precision=10, scale=2),
        "note": Column("note", Kind.TEXT),
    }
    table = TableSchema("dbo.lists", columns)
    conn = RecordingConnection()

    # When the dialect runs the upsert
    mssql.upsert(conn, table, columns["id"], "L1", {"name": "a", "amount": Decimal("2.50")}, ["note"], None)

    # Then the parameters match the placeholders: UPDATE values, key; INSERT key, values
    ((sql, params),) = conn.executed
    assert sql.count("%s") == len(params)
    assert params == ("a", "2.50", "L1", "L1", "a", "2.50")


def test_decimals_go_to_the_driver_as_exact_fixed_point_text() -> None:
    # Given a tiny decimal (pymssql would send Decimal('1E-7') as a float literal)
    # When adapted for the driver / Then it is plain fixed-point text
    assert mssql.to_driver(Decimal("1E-7"), Column("x", Kind.DECIMAL)) == "0.0000001"


# ---- URL -----------------------------------------------------------------------------------------


def test_connect_args_from_a_full_url() -> None:
    # Given a URL with a percent-encoded user and password, a port, a database and encryption
    url = "mssql://app%40corp:p%40ss%3Aw%2Frd%25@db.example.com:14330/appdb?encryption=require&appname=svc"

    # When turned into pymssql.connect arguments
    args = mssql.connect_args(url, timeout_s=7.9)

    # Then every part is decoded and passed through; autocommit is off; timeouts are whole seconds
    assert args["server"] == "db.example.com"
    assert args["port"] == "14330"
    assert args["user"] == "app@corp"
    assert args["password"] == "p@ss:w/rd%"
    assert args["database"] == "appdb"
    assert args["encryption"] == "require"
    assert args["appname"] == "svc"
    assert args["autocommit"] is False
    assert (args["login_timeout"], args["timeout"]) == (7, 7)


def test_connect_args_defaults() -> None:
    # Given a URL without port, database or options, and a sub-second budget
    args = mssql.connect_args("mssql://sa:pw@localhost", timeout_s=0.2)

    # Then the SQL Server defaults apply, no encryption option is forced, and timeouts are at least 1 s
    assert (args["port"], args["database"], args["tds_version"]) == ("1433", "master", "7.4")
    assert "encryption" not in args
    assert (args["login_timeout"], args["timeout"]) == (1, 1)


def test_connect_args_decodes_a_percent_encoded_database_name() -> None:
    # Given a database name with a space, percent-encoded as URLs require
    # When turned into connect arguments / Then the database is decoded like the user and password
    assert mssql.connect_args("mssql://u:p@h/my%20db", 5)["database"] == "my db"


# ---- catalog -------------------------------------------------------------------------------------


def catalog_row(
    name: str,
    type_name: str,
    max_length: int = 0,
    precision: int = 0,
    scale: int = 0,
    *,
    nullable: bool = True,
    identity: bool = False,
    computed: bool = False,
    default: bool = False,
    collation: str = "",
) -> tuple[Any, ...]:
    """One row of mssql._INTROSPECT (sys.columns: max_length in bytes, -1 for max)."""
    return (
        name,
        type_name,
        max_length,
        precision,
        scale,
        int(nullable),
        int(identity),
        int(computed),
        int(default),
        collation,
    )


def test_nvarchar_n_counts_utf16_units() -> None:
    # Given nvarchar(100) (sys.columns reports 200 bytes) / When read / Then 100 UTF-16 units
    column = mssql.column_from_catalog(catalog_row("name", "nvarchar", 200, collation="SQL_Latin1_General_CP1_CI_AS"))
    assert (column.kind, column.max_length, column.length_unit) == (Kind.TEXT, 100, "utf16")


def test_nvarchar_max_is_unbounded() -> None:
    # Given nvarchar(max) (max_length -1) / When read / Then no length limit
    column = mssql.column_from_catalog(catalog_row("body", "nvarchar", -1))
    assert column.kind is Kind.TEXT
    assert column.max_length is None


def test_varchar_with_utf8_collation_counts_bytes() -> None:
    # Given varchar(50) with a UTF-8 collation / When read / Then 50 bytes
    column = mssql.column_from_catalog(catalog_row("s", "varchar", 50, collation="Latin1_General_100_CI_AS_SC_UTF8"))
    assert (column.max_length, column.length_unit) == (50, "bytes")


@pytest.mark.parametrize(
    ("row", "kind", "fraction_digits"),
    [
        (catalog_row("at", "datetime2", 8, 27, 3), Kind.TIMESTAMP, 3),
        (catalog_row("at", "datetime2", 8, 27, 7), Kind.TIMESTAMP, 7),
        (catalog_row("at", "datetime", 8, 23, 3), Kind.TIMESTAMP, 3),
        (catalog_row("at", "datetimeoffset", 10, 34, 7), Kind.TIMESTAMPTZ, 7),
        (catalog_row("t", "time", 5, 16, 3), Kind.TIME, 3),
    ],
)
def test_temporal_types_keep_their_fraction_digits(row: tuple[Any, ...], kind: Kind, fraction_digits: int) -> None:
    # Given a date/time type with a scale / When read / Then kind and fractional digits follow it
    column = mssql.column_from_catalog(row)
    assert (column.kind, column.fraction_digits) == (kind, fraction_digits)


@pytest.mark.parametrize(
    ("type_name", "int_range"),
    [
        ("tinyint", (0, 255)),
        ("smallint", (-32768, 32767)),
        ("int", (-(2**31), 2**31 - 1)),
        ("bigint", (-(2**63), 2**63 - 1)),
    ],
)
def test_integer_types_have_their_ranges(type_name: str, int_range: tuple[int, int]) -> None:
    # Given an integer type (tinyint is unsigned on SQL Server) / When read / Then its range
    column = mssql.column_from_catalog(catalog_row("n", type_name))
    assert (column.kind, column.int_range) == (Kind.INTEGER, int_range)


@pytest.mark.parametrize(
    ("row", "kind"),
    [
        (catalog_row("b", "bit"), Kind.BOOLEAN),
        (catalog_row("d", "decimal", 9, 10, 2), Kind.DECIMAL),
        (catalog_row("u", "uniqueidentifier"), Kind.UUID),
        (catalog_row("f", "float", 8, 53), Kind.FLOAT),
        (catalog_row("d", "date"), Kind.DATE),
        (catalog_row("x", "varbinary", -1), Kind.OTHER),
    ],
)
def test_other_types_map_to_their_kind(row: tuple[Any, ...], kind: Kind) -> None:
    # Given a column type / When read / Then the matching conversion kind
    assert mssql.column_from_catalog(row).kind is kind


def test_decimal_keeps_precision_and_scale_and_real_is_32_bit() -> None:
    # Given decimal(10,2) and real / When read / Then precision/scale and the float32 limit are known
    money = mssql.column_from_catalog(catalog_row("amount", "decimal", 9, 10, 2))
    real = mssql.column_from_catalog(catalog_row("r", "real", 4, 24))
    assert (money.precision, money.scale) == (10, 2)
    assert real.float_max is not None
    assert real.float_max < 1e39


@pytest.mark.parametrize(
    "row",
    [
        catalog_row("id", "int", identity=True, nullable=False),
        catalog_row("total", "int", computed=True),
        catalog_row("rv", "timestamp", 8, nullable=False),
    ],
    ids=["identity", "computed", "rowversion"],
)
def test_identity_computed_and_rowversion_are_not_writable(row: tuple[Any, ...]) -> None:
    # Given a column the server fills itself / When read / Then clients cannot write it
    assert mssql.column_from_catalog(row).writable is False


def test_nullability_and_default_are_read() -> None:
    # Given a NOT NULL column with a default / When read / Then both are known
    column = mssql.column_from_catalog(catalog_row("created_at", "datetime2", 8, 27, 3, nullable=False, default=True))
    assert column.nullable is False
    assert column.has_default is True
    assert column.writable is True
