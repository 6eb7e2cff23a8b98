"""SQL Server dialect: error classification with real pymssql exception objects, SQL text, URL, catalog."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pymssql
import pytest
from pymssql import _mssql

from powersync_upload.convert import InvalidValue, convert
from powersync_upload.dialects import PutRow, PutRows, mssql
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


@pytest.fixture(autouse=True)
def sql_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Statement texts as SQL Server gets them (a test that connected to Babelfish set the module's
    server state in this process)."""
    monkeypatch.setattr(mssql, "SERVER", mssql.Server(babelfish=False, level=160))


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


def test_refused_connect_after_an_earlier_login_is_a_connection_failure() -> None:
    # Given what pymssql raised for a refused connect in a process that had logged in before: the
    # number is the stale 5703 of that login ("Changed language setting"), the text DB-Lib's 20009
    text = (
        b"Changed language setting to 'us_english'DB-Lib error message 20009, severity 9:\n"
        b"Unable to connect: TDS server is unavailable or does not exist (127.0.0.1)\n"
        b"Net-Lib error during Connection refused (111)\n"
    )
    # When classified / Then it is a retryable connection failure under DB-Lib's number, not UNCLASSIFIED_ERROR
    result = retryable(after_connect(5703, text))
    assert (result.kind, result.number) == ("connection", 20009)


def test_connection_failure_is_reported_under_the_newest_db_lib_number() -> None:
    # Given a refused connect reported under an earlier dead connection's 20047, with FreeTDS's lines
    # for both in the text, oldest first
    text = (
        b"DB-Lib error message 20047, severity 9:\nDBPROCESS is dead or not enabled\n"
        b"DB-Lib error message 20009, severity 9:\nUnable to connect: TDS server is unavailable or does not exist\n"
    )
    # When classified / Then the number is the newest, 20009
    assert retryable(after_connect(20047, text)).number == 20009


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
        (220, Reason.OUT_OF_RANGE),
        (232, Reason.OUT_OF_RANGE),
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
    assert result.details() == {"error_number": "50000"}


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


class RecordingConnection:
    """A DB-API connection double that records what the dialect executes."""

    def __init__(self) -> None:
        self.executed: list[tuple[str, tuple[Any, ...]]] = []

    def cursor(self) -> RecordingConnection:
        return self

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        self.executed.append((sql, params))

    def fetchall(self) -> list[tuple[Any, ...]]:
        return []

    def fetchone(self) -> tuple[Any, ...] | None:
        return None

    def nextset(self) -> bool | None:
        return None

    rowcount = 1


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

    # Then every part is decoded and passed through; pymssql's autocommit is on (the dialect issues
    # BEGIN/COMMIT itself); timeouts are whole seconds
    assert args["server"] == "db.example.com"
    assert args["port"] == "14330"
    assert args["user"] == "app@corp"
    assert args["password"] == "p@ss:w/rd%"
    assert args["database"] == "appdb"
    assert args["encryption"] == "require"
    assert args["appname"] == "svc"
    assert args["autocommit"] is True
    assert (args["login_timeout"], args["timeout"]) == (7, 7)


def test_connect_args_defaults() -> None:
    # Given a URL without port, database or options, and a sub-second budget
    args = mssql.connect_args("mssql://sa:pw@localhost", timeout_s=0.2)

    # Then the SQL Server defaults apply, no encryption option is forced, and timeouts are at least 1 s
    assert (args["port"], args["database"], args["tds_version"]) == ("1433", "master", "7.4")
    assert "encryption" not in args
    assert (args["login_timeout"], args["timeout"]) == (1, 1)


def test_the_query_timeout_is_the_request_deadline_not_the_time_left_when_connecting() -> None:
    # Given a connection opened late in a request (1.4 s left) of a function whose deadline is 28 s
    # When turned into connect arguments
    args = mssql.connect_args("mssql://sa:pw@localhost/app", timeout_s=1.4, statement_s=28.0)

    # Then the login waits at most what is left, but the query timeout, which pymssql keeps for the
    # connection's life, is the whole deadline (a 1 s cap would hold for every later request too)
    assert (args["login_timeout"], args["timeout"]) == (1, 28)


def test_connect_args_decodes_a_percent_encoded_database_name() -> None:
    # Given a database name with a space, percent-encoded as URLs require
    # When turned into connect arguments / Then the database is decoded like the user and password
    assert mssql.connect_args("mssql://u:p@h/my%20db", 5)["database"] == "my db"


# ---- catalog -------------------------------------------------------------------------------------

DATABASE_COLLATION = "SQL_Latin1_General_CP1_CI_AS"


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
    code_page: int | None = None,
    database_collation: str = DATABASE_COLLATION,
) -> tuple[Any, ...]:
    """One row of mssql._INTROSPECT (sys.columns: max_length in bytes, -1 for max; the collation's
    code page; the database's default collation)."""
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
        code_page,
        database_collation,
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


# ---- issue 9: what a real T-SQL engine showed ------------------------------------------------------

# 547 and 3903 as a login with another default language receives them. German 547 is the sys.messages
# template "Die %1!-Anweisung steht in Konflikt mit der %2!-Einschränkung "%3!". Der Konflikt trat in
# der "%4!"-Datenbank, Tabelle "%5!"%6!%7!%8! auf." (language_id 1031) filled in as SQL Server fills it:
# the kind and ", column '...'" are parameters and stay untranslated.
FK_INSERT_DE = 'Die INSERT-Anweisung steht in Konflikt mit der FOREIGN KEY-Einschränkung "FK_todos_lists". Der Konflikt trat in der "d"-Datenbank, Tabelle "dbo.lists", column \'id\' auf.'.encode()  # noqa: E501
FK_DELETE_DE = 'Die DELETE-Anweisung steht in Konflikt mit der REFERENCE-Einschränkung "FK_todos_lists". Der Konflikt trat in der "d"-Datenbank, Tabelle "dbo.todos", column \'list_id\' auf.'.encode()  # noqa: E501
CHECK_DE = 'Die INSERT-Anweisung steht in Konflikt mit der CHECK-Einschränkung "CK_todos_priority". Der Konflikt trat in der "d"-Datenbank, Tabelle "dbo.todos", column \'priority\' auf.'.encode()  # noqa: E501
FK_INSERT_FR = 'L\'instruction INSERT est en conflit avec la contrainte FOREIGN KEY "FK_todos_lists". Le conflit s\'est produit dans la base de données "d", table "dbo.lists", column \'id\'.'.encode()  # noqa: E501
CHECK_FR = 'L\'instruction UPDATE est en conflit avec la contrainte CHECK "CK_todos_priority". Le conflit s\'est produit dans la base de données "d", table "dbo.todos", column \'priority\'.'.encode()  # noqa: E501
NO_BEGIN_DE = b"Die ROLLBACK TRANSACTION-Anforderung hat keine entsprechende BEGIN TRANSACTION."
NO_BEGIN_FR = "La requête ROLLBACK TRANSACTION n'a pas de BEGIN TRANSACTION correspondante.".encode()


@pytest.mark.parametrize(
    ("text", "code", "constraint"),
    [
        (FK_INSERT_DE, ErrorCode.FOREIGN_KEY_VIOLATION, "FK_todos_lists"),
        (FK_DELETE_DE, ErrorCode.FOREIGN_KEY_VIOLATION, "FK_todos_lists"),
        (CHECK_DE, ErrorCode.CHECK_VIOLATION, "CK_todos_priority"),
        (FK_INSERT_FR, ErrorCode.FOREIGN_KEY_VIOLATION, "FK_todos_lists"),
        (CHECK_FR, ErrorCode.CHECK_VIOLATION, "CK_todos_priority"),
    ],
    ids=["de-fk-insert", "de-reference-delete", "de-check", "fr-fk-insert", "fr-check"],
)
def test_547_kind_and_constraint_do_not_depend_on_the_login_language(
    raised: Any, text: bytes, code: ErrorCode, constraint: str
) -> None:
    # Given a 547 in German or French, for a constraint the catalog has not named to the dialect
    mssql.CONSTRAINT_KINDS.clear()

    # When classified
    result = fatal(raised(547, text))

    # Then the kind and the constraint are those of the English message
    assert (result.code, result.constraint) == (code, constraint)


def test_547_kind_comes_from_the_catalog_by_constraint_name() -> None:
    # Given the catalog said CK_odd is a CHECK constraint (introspection reads sys.check_constraints)
    conn = CatalogConnection([catalog_row("id", "int")], [("CK_odd", "C", "([id]>(0))"), ("FK_todos_lists", "F", None)])
    mssql.introspect(conn, "dbo.todos")
    # and a 547 whose text carries no kind word the dialect knows (a future wording, any language)
    text = b'Konflikt mit "CK_odd" in Tabelle "dbo.todos", column \'priority\'.'

    # When classified
    result = fatal(after_execute(547, text))

    # Then the catalog's kind is used
    assert (result.code, result.constraint) == (ErrorCode.CHECK_VIOLATION, "CK_odd")


@pytest.mark.parametrize("text", [NO_BEGIN_DE, NO_BEGIN_FR], ids=["de", "fr"])
@pytest.mark.parametrize("shape", ["execute", "_mssql"])
def test_3903_on_rollback_means_nothing_to_roll_back_in_any_language(text: bytes, shape: str) -> None:
    # Given a server that already rolled the transaction back answers the rollback with a localized 3903
    conn = RaisingConnection(SHAPES[shape](3903, text))

    # When the dialect rolls back / Then it returns normally: there was nothing to roll back
    mssql.rollback(conn)
    assert conn.executed == [mssql.ROLLBACK_SQL]


def test_rollback_raises_other_errors() -> None:
    # Given the rollback fails because the connection is gone (DB-Lib 20006)
    conn = RaisingConnection(after_execute(20006, b"Write to the server failed"))

    # When the dialect rolls back / Then the error reaches the engine
    with pytest.raises(pymssql.Error):
        mssql.rollback(conn)


def test_rollback_only_rolls_back_an_open_transaction() -> None:
    # Given any connection / When rolled back / Then the statement is guarded by @@TRANCOUNT (no 3903)
    conn = RecordingConnection()
    mssql.rollback(conn)
    assert conn.executed == [("IF @@TRANCOUNT > 0 ROLLBACK TRAN", ())]


def test_varchar_under_a_latin1_collation_holds_code_page_1252_counted_in_bytes() -> None:
    # Given varchar(10) under SQL_Latin1_General_CP1_CI_AS (code page 1252), the database default
    column = mssql.column_from_catalog(catalog_row("code", "varchar", 10, collation=DATABASE_COLLATION, code_page=1252))

    # When read / Then it holds cp1252, counted in bytes, and needs no COLLATE (it is the default)
    assert (column.encoding, column.max_length, column.length_unit, column.collation) == ("cp1252", 10, "bytes", "")


def test_text_outside_a_varchar_code_page_is_invalid_data_encoding() -> None:
    # Given the introspected varchar(10) of case 040 (code page 1252)
    column = mssql.column_from_catalog(catalog_row("code", "varchar", 10, collation=DATABASE_COLLATION, code_page=1252))

    # When Chinese text is converted for it / Then it is refused (SQL Server would store '??')
    with pytest.raises(InvalidValue) as caught:
        convert("漢字", column)
    assert caught.value.reason is Reason.ENCODING
    # And text of the code page is accepted, its length counted in cp1252 bytes
    assert convert("café €", column) == "café €"


def test_double_byte_code_page_counts_its_own_bytes() -> None:
    # Given varchar(4) under a Japanese collation (code page 932: a kanji takes 2 bytes)
    column = mssql.column_from_catalog(catalog_row("k", "varchar", 4, collation="Japanese_CI_AS", code_page=932))

    # When converted / Then two kanji fit and three are too long (a CAST would cut them silently)
    assert convert("漢字", column) == "漢字"
    with pytest.raises(InvalidValue) as caught:
        convert("漢字字", column)
    assert caught.value.reason is Reason.TOO_LONG


@pytest.mark.parametrize(
    "row",
    [
        catalog_row("s", "varchar", 20, collation="Latin1_General_100_CI_AS_SC_UTF8", code_page=65001),
        catalog_row("s", "nvarchar", 20, collation=DATABASE_COLLATION, code_page=1252),
    ],
    ids=["varchar-utf8", "nvarchar"],
)
def test_utf8_collations_and_nvarchar_hold_any_text(row: tuple[Any, ...]) -> None:
    # Given a UTF-8 varchar or an nvarchar / When read / Then no character set limits it
    column = mssql.column_from_catalog(row)
    assert column.encoding is None
    assert convert("漢字 😀", column) == "漢字 😀"


def varchar_table() -> tuple[TableSchema, Column]:
    """The errors table's shape: ``id varchar(36)`` key (default collation), a datetime2(3)."""
    columns = {
        "id": mssql.column_from_catalog(catalog_row("id", "varchar", 36, collation=DATABASE_COLLATION, code_page=1252)),
        "at": mssql.column_from_catalog(catalog_row("at", "datetime2", 8, 27, 3)),
        "zone": mssql.column_from_catalog(catalog_row("zone", "datetimeoffset", 10, 34, 7)),
        "note": mssql.column_from_catalog(catalog_row("note", "nvarchar", 200, collation=DATABASE_COLLATION)),
    }
    return TableSchema("dbo.t", columns), columns["id"]


@pytest.mark.parametrize(
    ("text", "kind", "in_process"),
    [
        (b"canceling statement due to lock timeout", "lock_timeout", True),
        (b"deadlock detected", "deadlock", True),
        (b"could not serialize access due to concurrent update", "serialization_failure", True),
        (b"canceling statement due to statement timeout", "statement_timeout", False),
    ],
)
def test_babelfish_generic_error_is_retryable_by_its_postgresql_text(
    raised: Any, text: bytes, kind: str, in_process: bool
) -> None:
    # Given Babelfish's generic 33557097 carrying a PostgreSQL lock, deadlock or timeout message
    # When classified
    result = retryable(raised(33557097, text))

    # Then it is retryable (a lock wait past the timeout must not drop a valid transaction)
    assert (result.kind, result.in_process, result.number) == (kind, in_process, 33557097)


def test_babelfish_generic_error_with_another_text_is_unclassified() -> None:
    # Given 33557097 for something else / When classified / Then fatal, with the number kept
    result = fatal(after_execute(33557097, b"function foo(integer) does not exist"))
    assert (result.code, result.number) == (ErrorCode.UNCLASSIFIED_ERROR, 33557097)


def test_babelfish_unique_index_violation_is_2627_unique_violation() -> None:
    # Given Babelfish's 2627 for a unique index (it reports 2627, not 2601) in PostgreSQL's wording
    text = b'duplicate key value violates unique constraint "ux_lists_owner_namelists1a2b3c4d"'

    # When classified / Then UNIQUE_VIOLATION (for a PUT the engine retries once, as an update: the
    # ignored lock hints let a concurrent first insert of the same key through to the insert)
    result = fatal(after_execute(2627, text))
    assert (result.code, result.constraint) == (ErrorCode.UNIQUE_VIOLATION, "ux_lists_owner_namelists1a2b3c4d")


@pytest.mark.parametrize(
    ("version", "expected"), [("Babelfish for Aurora PostgreSQL ...", True), ("Microsoft SQL Server 2022", False)]
)
def test_babelfish_is_detected_by_its_version_string(version: str, expected: bool) -> None:
    # Given a server answering @@VERSION / When asked / Then Babelfish is recognised
    conn = CatalogConnection([(version,)], [])
    assert mssql.is_babelfish(conn) is expected


def test_begin_sets_a_lock_timeout_without_reaching_into_the_driver_connection() -> None:
    # Given a connection that is only a DB-API connection (as a counting wrapper is: no pymssql `_conn`)
    conn = RecordingConnection()

    # When a transaction begins with 30 s left
    mssql.begin(conn, 30.0)

    # Then one batch caps lock waits at 5 s and opens the transaction; nothing else is touched
    assert conn.executed == [("SET LOCK_TIMEOUT 5000; BEGIN TRAN", ())]


def test_commit_is_an_explicit_statement() -> None:
    # Given a connection / When committed / Then COMMIT TRAN runs as a statement (its error number survives)
    conn = RecordingConnection()
    mssql.commit(conn)
    assert conn.executed == [("COMMIT TRAN", ())]


def test_proxy_mode_from_the_url_changes_no_session_state(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given RDS Proxy mode chosen in the URL
    monkeypatch.delenv("DB_PROXY", raising=False)
    url = "mssql://u:p@proxy.example.com/appdb?proxy=1"

    # When connect arguments and the transaction start are built
    args = mssql.connect_args(url, 10)

    # Then pymssql sends none of its default SET statements, and a transaction starts without SET
    assert args["conn_properties"] == ""
    assert mssql.proxy_mode(url)
    assert mssql.begin_sql(10, proxied=True) == "BEGIN TRAN"


def test_proxy_mode_from_the_environment_without_a_database_sends_no_use(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given DB_PROXY=1 and a URL without a database
    monkeypatch.setenv("DB_PROXY", "1")

    # When connect arguments are built / Then no database is selected (no USE: the login's default)
    args = mssql.connect_args("mssql://u:p@proxy.example.com", 10)
    assert (args["database"], args["conn_properties"]) == ("", "")


def test_without_proxy_mode_pymssql_keeps_its_default_session_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given no proxy setting / When connect arguments are built / Then pymssql's defaults apply
    monkeypatch.delenv("DB_PROXY", raising=False)
    assert "conn_properties" not in mssql.connect_args("mssql://u:p@db/appdb", 10)


class CatalogConnection:
    """A connection double whose cursor answers its first statement with one result set, then a second
    one (nextset); later statements find nothing, but for the unique index read (``sys.indexes``),
    which finds ``unique``."""

    def __init__(
        self, first: list[tuple[Any, ...]], second: list[tuple[Any, ...]], unique: list[tuple[Any, ...]] | None = None
    ) -> None:
        self.answer = [first, second]
        self.unique = unique or []
        self.results: list[list[tuple[Any, ...]]] = []
        self.executed: list[str] = []

    def cursor(self) -> CatalogConnection:
        return self

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        self.results = self.answer if not self.executed else [self.unique if "sys.indexes" in sql else []]
        self.executed.append(sql)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.results[0]

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.results[0][0] if self.results[0] else None

    def nextset(self) -> bool:
        self.results.pop(0)
        return bool(self.results)


def test_introspection_reads_the_primary_key_and_leaves_a_filtered_index_loose() -> None:
    # Given the unique index read of a table (index_id, column, is_primary_key, has_filter, as pymssql
    # returns the bits): a primary key on id, a unique constraint on email, a filtered unique index on code
    columns = [catalog_row(name, "nvarchar") for name in ("id", "email", "code")]
    rows = [(1, "id", True, False), (2, "email", False, False), (3, "code", False, True)]

    # When the table is introspected
    schema = mssql.introspect(CatalogConnection(columns, [], unique=rows), "dbo.notes")

    # Then the primary key is known, and only id and email identify a row alone
    assert schema is not None
    assert schema.primary_key == ("id",)
    assert [c for c in schema.columns if schema.identifies_rows(c)] == ["id", "email"]
    assert "is_primary_key, i.has_filter" in mssql._UNIQUE and "is_primary_key = 0" not in mssql._UNIQUE


class RaisingConnection:
    """A connection double whose every statement fails with ``error`` (recording the SQL)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.executed: list[str] = []

    def cursor(self) -> RaisingConnection:
        return self

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        self.executed.append(sql)
        raise self.error


# Babelfish 4.2's 547 texts, as it sent them for case 039's fixture (PostgreSQL's wording)
BABELFISH_REFERENCE = (
    b'update or delete on table "lists" violates foreign key constraint "todos_list_id_fkey" on table "todos"'
)
BABELFISH_FK = b'insert or update on table "todos" violates foreign key constraint "todos_list_id_fkey"'
BABELFISH_CHECK = b'new row for relation "todos" violates check constraint "ck_todos_tags"'


@pytest.mark.parametrize(
    ("text", "code", "constraint"),
    [
        (BABELFISH_REFERENCE, ErrorCode.FOREIGN_KEY_VIOLATION, "todos_list_id_fkey"),
        (BABELFISH_FK, ErrorCode.FOREIGN_KEY_VIOLATION, "todos_list_id_fkey"),
        (BABELFISH_CHECK, ErrorCode.CHECK_VIOLATION, "ck_todos_tags"),
    ],
    ids=["reference", "foreign-key", "check"],
)
@pytest.mark.parametrize("catalog", [False, True], ids=["no-catalog", "catalog"])
def test_babelfish_547_names_the_constraint_not_the_table(
    text: bytes, code: ErrorCode, constraint: str, catalog: bool
) -> None:
    # Given Babelfish's 547, whose first quoted name is a table, with or without the catalog's names
    mssql.CONSTRAINT_KINDS.clear()
    if catalog:
        mssql.introspect(
            CatalogConnection(
                [catalog_row("id", "int")],
                [
                    ("todos_list_id_fkey", "F", None),
                    ("ck_todos_tags", "C", "(isjson(tags) = 1)"),
                ],
            ),
            "todos",
        )

    # When classified
    result = fatal(after_execute(547, text))

    # Then the kind and the constraint are right (not CONSTRAINT_VIOLATION on constraint "lists")
    assert (result.code, result.constraint) == (code, constraint)


class CountingConnection(RecordingConnection):
    """A recording connection whose statement answers one row: ``written``."""

    def __init__(self, written: int) -> None:
        super().__init__()
        self.written = written

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [(self.written,)]


def test_batch_put_is_one_call_whose_update_is_limited_to_the_callers_rows() -> None:
    # Given an owned table (guarded_upsert) and one caller's batch of two rows
    columns = {
        "id": mssql.column_from_catalog(catalog_row("id", "uniqueidentifier", 16)),
        "owner": mssql.column_from_catalog(catalog_row("owner", "nvarchar", 510, collation=DATABASE_COLLATION)),
    }
    table, key = TableSchema("dbo.t", columns), columns["id"]
    mine, theirs = "a0000000-0000-0000-0000-000000000001", "a0000000-0000-0000-0000-000000000002"
    conn = CountingConnection(1)

    # When U1 PUTs both in one batch and the server answers that one row was written
    written = mssql.upsert_many(
        conn, PutRows(table, key, [(mine, {"owner": "u1"}), (theirs, {"owner": "U1"})], [], columns["owner"])
    )

    # Then one call updates only rows whose stored owner is the row's own, inserts only missing keys
    # (a row of someone else's is neither), and its answer is the count the engine compares
    assert mssql.guarded_upsert is True
    ((statement, _),) = (unwrap(sql) for sql, _ in conn.executed)
    assert statement == (
        "DECLARE @n int; UPDATE t SET t.[owner] = j.c1 FROM [dbo].[t] AS t WITH (UPDLOCK, SERIALIZABLE) JOIN "
        "OPENJSON(@rows) WITH (c0 uniqueidentifier '$[0]', c1 nvarchar(255) '$[1]') AS j ON t.[id] = j.c0 "
        "WHERE t.[owner] = j.c1; SET @n = @@ROWCOUNT; INSERT INTO [dbo].[t] ([id], [owner]) SELECT j.c0, j.c1 "
        "FROM OPENJSON(@rows) WITH (c0 uniqueidentifier '$[0]', c1 nvarchar(255) '$[1]') AS j WHERE NOT EXISTS "
        "(SELECT 1 FROM [dbo].[t] AS x WITH (UPDLOCK, SERIALIZABLE) WHERE x.[id] = j.c0); SELECT @n + @@ROWCOUNT"
    )
    assert json.loads(conn.executed[0][1][0]) == [[mine, "u1"], [theirs, "U1"]]
    assert written == 1


def test_speculative_batch_put_inserts_only_when_no_key_exists() -> None:
    # Given a speculative batch (the planner's insert of several client transactions)
    table, key = shapes_table()
    conn = CountingConnection(0)

    # When it is sent and the server answers 0 (a key existed)
    rows = [("a0000000-0000-0000-0000-000000000001", {"n": 1})]
    written = mssql.upsert_many(conn, PutRows(table, key, rows, [], None, only_new=True))

    # Then one INSERT guarded by NOT EXISTS over all the keys, and nothing counted as written
    ((statement, _),) = (unwrap(sql) for sql, _ in conn.executed)
    assert statement.startswith("INSERT INTO [dbo].[t] ([id], [n]) SELECT j.c0, j.c1 FROM OPENJSON(@rows)")
    assert statement.endswith(
        "WHERE NOT EXISTS (SELECT 1 FROM [dbo].[t] WITH (UPDLOCK, SERIALIZABLE) WHERE [id] IN (SELECT j.c0 FROM "
        "OPENJSON(@rows) WITH (c0 uniqueidentifier '$[0]') AS j)); SELECT @@ROWCOUNT"
    )
    assert written == 0


# ---- statement shapes: sp_executesql, OPENJSON, declared types --------------------------------------

_EXEC = re.compile(r"^EXEC sp_executesql N'((?:[^']|'')*)', N'((?:[^']|'')*)', (.*)$", re.DOTALL)


def unwrap(sql: str) -> tuple[str, str]:
    """``(inner statement, declarations)`` of an ``EXEC sp_executesql`` text (quotes undoubled, ``%%``
    as pymssql's interpolation leaves it)."""
    match = _EXEC.match(sql)
    assert match is not None, sql
    return match.group(1).replace("''", "'").replace("%%", "%"), match.group(2).replace("''", "'")


def shapes_table() -> tuple[TableSchema, Column]:
    """A uniqueidentifier key, an owner, text of the default and of another collation, a datetime2(3)."""
    columns = {
        "id": mssql.column_from_catalog(catalog_row("id", "uniqueidentifier", 16)),
        "owner_id": mssql.column_from_catalog(catalog_row("owner_id", "varchar", 36, collation=DATABASE_COLLATION)),
        "name": mssql.column_from_catalog(catalog_row("name", "nvarchar", 200, collation=DATABASE_COLLATION)),
        "greek": mssql.column_from_catalog(catalog_row("greek", "varchar", 20, collation="Greek_CI_AS")),
        "at": mssql.column_from_catalog(catalog_row("at", "datetime2", 8, 27, 3)),
        "n": mssql.column_from_catalog(catalog_row("n", "int", 4)),
    }
    return TableSchema("dbo.t", columns), columns["id"]


def batch_statements(count: int) -> list[str]:
    """Every batch statement the dialect sends for ``count`` rows (each twice, with other values)."""
    table, key = shapes_table()
    owner = table.columns["owner_id"]
    sent: list[str] = []
    for attempt in range(2):
        keys = [f"{attempt:08x}-0000-0000-0000-{i:012x}" for i in range(count)]
        values = {"owner_id": f"u{attempt}", "greek": "\u03b1\u03b2", "at": None}
        rows = [(k, {**values, "name": f"n{i}"}) for i, k in enumerate(keys)]
        conn = RecordingConnection()
        mssql.upsert_many(conn, PutRows(table, key, rows, ["n"], owner))
        mssql.update_many(conn, table, key, rows, (owner, f"u{attempt}"))
        mssql.delete_many(conn, table, key, keys, (owner, f"u{attempt}"))
        mssql.select_rows(conn, table, key, keys, [table.columns["n"], owner], "update")
        mssql.select_many(conn, table, key, keys, owner, "share")
        mssql.ledger_read(conn, f"user{attempt}", "c", [f"{i:064x}" for i in range(count)])
        mssql.conflicts_insert(conn, [{"id": f"{i}", "user_id": "u", "reason": "stale"} for i in range(count)])
        assert all(sql.count("%s") == len(params) for sql, params in conn.executed)
        sent += [sql.split(", @rows = ")[0] for sql, _ in conn.executed]
    return sent


@pytest.mark.parametrize("count", [1, 999, 5000])
def test_batch_statement_texts_do_not_depend_on_the_rows(count: int) -> None:
    # Given batches of 1, 999 and 5000 rows / When every batch statement is built, twice with other values
    one, this = batch_statements(1), batch_statements(count)

    # Then each is one sp_executesql call whose text is the same for any row count and any values
    assert this == one
    assert len(this) == 2 * 7  # upsert, update, delete, read, read, ledger read, conflicts: 1 each
    assert all(sql.startswith("EXEC sp_executesql N'") for sql in this)


def test_rows_travel_as_one_json_parameter_shredded_with_the_columns_types() -> None:
    # Given two new rows whose datetime2 value is NULL in every row
    table, key = shapes_table()
    conn = RecordingConnection()
    rows = [("b0000000-0000-0000-0000-000000000002", {"name": "x", "greek": "\u03b1\u03b2", "at": None})]
    rows.append(("a0000000-0000-0000-0000-000000000001", {"name": "y", "greek": "\u03b3", "at": None}))

    # When they are upserted as one batch (no row exists)
    mssql.upsert_many(conn, PutRows(table, key, rows, []))

    # Then the INSERT shreds @rows typed as the columns (an all-NULL column is datetime2(3), not int);
    # the varchar of another collation converts under its own code page; rows go sorted by key
    statement, declarations = unwrap(conn.executed[-1][0])
    insert = statement.split("; ")[3]
    assert insert == (
        "INSERT INTO [dbo].[t] ([id], [name], [greek], [at]) SELECT j.c0, j.c1, "
        "CAST(j.c2 COLLATE Greek_CI_AS AS varchar(20)), j.c3 FROM OPENJSON(@rows) WITH (c0 uniqueidentifier '$[0]', "
        "c1 nvarchar(100) '$[1]', c2 nvarchar(max) '$[2]', c3 datetime2(3) '$[3]') AS j WHERE NOT EXISTS "
        "(SELECT 1 FROM [dbo].[t] AS x WITH (UPDLOCK, SERIALIZABLE) WHERE x.[id] = j.c0)"
    )
    assert declarations == "@rows nvarchar(max)"
    assert json.loads(conn.executed[-1][1][0]) == [
        ["a0000000-0000-0000-0000-000000000001", "y", "\u03b3", None],
        ["b0000000-0000-0000-0000-000000000002", "x", "\u03b1\u03b2", None],
    ]


def test_scalars_are_declared_with_the_columns_declared_type_never_the_values_length() -> None:
    # Given a varchar(36) owner and two callers whose ids differ in length
    table, key = shapes_table()
    owner = table.columns["owner_id"]
    texts = []
    for user in ("u", "a-much-longer-user-id"):
        conn = RecordingConnection()
        mssql.delete_many(conn, table, key, ["a0000000-0000-0000-0000-000000000001"], (owner, user))
        texts.append(conn.executed[0][0].split(", @rows = ")[0])

    # Then @owner is varchar(36) both times (one plan, and the key seek stays a varchar comparison)
    assert texts[0] == texts[1]
    statement, declarations = unwrap(conn.executed[0][0])
    assert declarations == "@rows nvarchar(max), @owner varchar(36)"
    assert statement.endswith(" WHERE t.[owner_id] = @owner")


def test_per_operation_statements_go_through_sp_executesql_with_declared_parameters() -> None:
    # Given a table with a uniqueidentifier key
    table, key = shapes_table()
    conn = RecordingConnection()
    k = "a0000000-0000-0000-0000-000000000001"

    # When a row is read for update, upserted, updated and deleted, one at a time
    mssql.select_value(conn, table, key, k, table.columns["owner_id"], "update")
    mssql.upsert(conn, PutRow(table, key, k, {"name": "n", "greek": "\u03b1"}, ["at"]))
    mssql.update(conn, table, key, k, {"name": "n"})
    mssql.delete(conn, table, key, k)

    # Then each is one parameterized statement: values only in the parameters, the key declared as its type
    (select, s_decl), (upsert, u_decl), (update, _), (delete, d_decl) = (unwrap(sql) for sql, _ in conn.executed)
    assert select == "SELECT t.[owner_id] FROM [dbo].[t] AS t WITH (UPDLOCK, HOLDLOCK) WHERE t.[id] = @k"
    assert upsert == (
        "UPDATE [dbo].[t] WITH (UPDLOCK, SERIALIZABLE) SET [name] = @p0, [greek] = CAST(@p1 COLLATE Greek_CI_AS AS "
        "varchar(20)), [at] = NULL WHERE [id] = @k; IF @@ROWCOUNT = 0 INSERT INTO [dbo].[t] ([id], [name], [greek]) "
        "VALUES (@k, @p0, CAST(@p1 COLLATE Greek_CI_AS AS varchar(20)))"
    )
    assert "MERGE" not in upsert
    assert u_decl == "@k uniqueidentifier, @p0 nvarchar(100), @p1 nvarchar(max)"
    assert update == "UPDATE [dbo].[t] SET [name] = @p0 WHERE [id] = @k"
    assert delete == "DELETE FROM [dbo].[t] WHERE [id] = @k"
    assert s_decl == d_decl == "@k uniqueidentifier"
    assert conn.executed[1][1] == (k, "n", "\u03b1")
    assert all(sql.count("%s") == len(params) for sql, params in conn.executed)


def test_upsert_with_nothing_to_update_inserts_only_when_missing() -> None:
    # Given a PUT of a row with only its key / When its statement is built
    table, key = shapes_table()
    statement = mssql.upsert_shape(table, key, [], []).statement

    # Then an existing row is left alone and a missing one is inserted under a key-range lock
    assert statement == (
        "IF NOT EXISTS (SELECT 1 FROM [dbo].[t] WITH (UPDLOCK, SERIALIZABLE) WHERE [id] = @k) "
        "INSERT INTO [dbo].[t] ([id]) VALUES (@k)"
    )


def test_a_name_with_quotes_and_percent_survives_both_literals() -> None:
    # Given a column named o'k%s
    column = Column("o'k%s", Kind.INTEGER, type_name="int")
    table = TableSchema("dbo.t", {"id": Column("id", Kind.INTEGER, type_name="int"), "o'k%s": column})
    conn = RecordingConnection()

    # When it is updated
    mssql.update(conn, table, table.columns["id"], 1, {"o'k%s": 2})

    # Then the statement names it exactly (quote doubled inside N'...', % doubled for pymssql)
    assert unwrap(conn.executed[0][0])[0] == "UPDATE [dbo].[t] SET [o'k%s] = @p0 WHERE [id] = @k"
    assert conn.executed[0][0] % conn.executed[0][1]  # interpolates without a stray placeholder


def test_keys_are_locked_in_sql_servers_uniqueidentifier_order() -> None:
    # Given uniqueidentifiers that differ in their first and in their last bytes
    key = Column("id", Kind.UUID, type_name="uniqueidentifier")
    late_node = "00000000-0000-0000-0000-000000000002"
    early_node = "ffffffff-0000-0000-0000-000000000001"

    # When sorted for locking / Then SQL Server's order (last 6 bytes first) is followed
    assert mssql.sorted_keys([late_node, early_node], key) == [early_node, late_node]
    text = Column("id", Kind.TEXT, type_name="nvarchar")
    assert mssql.sorted_keys(["b", "A", "a2"], text) == ["A", "a2", "b"]


def test_babelfish_locks_rows_with_a_no_op_update_before_the_read() -> None:
    # Given Babelfish (which ignores lock hints)
    table, key = shapes_table()
    owner = table.columns["owner_id"]

    # When the locking read is built for update, and for a share lock
    update = mssql.read_shape(table, key, [owner], "update", babelfish=True).statement
    share = mssql.read_shape(table, key, [owner], "share", babelfish=True).statement

    # Then an update read first takes PostgreSQL row locks with a no-op UPDATE of the same rows
    assert update.startswith(
        "UPDATE t SET t.[id] = t.[id] FROM [dbo].[t] AS t JOIN OPENJSON(@rows) WITH (c0 uniqueidentifier '$[0]') AS j "
        "ON t.[id] = j.c0; SELECT t.[id], t.[owner_id] FROM"
    )
    assert share.startswith("SELECT")
    assert mssql.read_shape(table, key, [owner], "update", babelfish=False).statement.startswith("SELECT")


def test_rowversion_is_read_as_its_hex_text() -> None:
    # Given a rowversion column (the catalog's type name is timestamp), as the driver returns it
    version = mssql.column_from_catalog(catalog_row("version", "timestamp", 8))

    # When it is read for a version check
    # Then it is 0x + 16 upper-case hex digits, and it is never written
    assert mssql.read_value(b"\x00\x00\x00\x00\x00\x00\x07\xd1", version) == "0x00000000000007D1"
    assert mssql.read_value(None, version) is None
    assert version.writable is False


def test_ledger_and_conflict_statements_are_constant_and_typed() -> None:
    # Given a ledger read and a conflicts insert
    conn = RecordingConnection()
    mssql.ledger_read(conn, "u1", "c1", ["d" * 64, "d" * 64, "e" * 64])
    mssql.conflicts_insert(conn, [{"id": "x", "user_id": "u1", "reason": "stale", "created_at": None}])

    # Then the user and client are nvarchar(255) scalars and the digests one JSON parameter (deduplicated)
    (read, read_decl), (insert, _) = (unwrap(sql) for sql, _ in conn.executed)
    assert read_decl == "@user nvarchar(255), @client nvarchar(255), @rows nvarchar(max)"
    assert read.endswith("AND digest IN (SELECT j.c0 FROM OPENJSON(@rows) WITH (c0 nchar(64) '$[0]') AS j)")
    assert json.loads(conn.executed[0][1][2]) == [["d" * 64], ["e" * 64]]
    assert insert.startswith("INSERT INTO powersync_upload_conflicts (id, user_id, client_id,")
    assert json.loads(conn.executed[1][1][0])[0][-1] == 0  # resolved defaults to 0


class ServerConnection(RecordingConnection):
    """A connection whose first query answers ``(@@VERSION, compatibility level)``."""

    def __init__(self, version: str, level: int) -> None:
        super().__init__()
        self.row = (version, level)

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.row

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("version", "level", "babelfish"),
    [("Microsoft SQL Server 2022 (RTM)", 160, False), ("Babelfish for Aurora PostgreSQL", 120, True)],
)
def test_server_engine_and_level_are_read_at_connect(version: str, level: int, babelfish: bool) -> None:
    # Given SQL Server at level 160, or Babelfish (whatever level it reports)
    # When checked / Then the engine is known and nothing is refused
    server = mssql.check_server(ServerConnection(version, level))
    assert (server.babelfish, server.level) == (babelfish, level)
    mssql.check_server(ServerConnection("Microsoft SQL Server 2022", 160))


def test_the_server_is_checked_on_the_first_connection_to_a_url_not_on_each_reconnect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a server at level 160 and a container that has not connected yet
    monkeypatch.setattr(mssql, "SERVER", mssql.Server())
    opened: list[ServerConnection] = []

    def fake_connect(**_: Any) -> ServerConnection:
        opened.append(ServerConnection("Microsoft SQL Server 2022", 160))
        return opened[-1]

    monkeypatch.setattr("pymssql.connect", fake_connect)
    url = "mssql://u:p@db:1433/app"

    # When it connects, reconnects, then connects to another database
    for target in (url, url, "mssql://u:p@db:1433/other"):
        mssql.connect(target, 5)

    # Then only the first connection to each URL reads the version and level
    assert [len(c.executed) for c in opened] == [1, 0, 1]


def test_a_refused_level_is_checked_again_on_the_next_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a database at level 120, raised to 130 after the first refusal
    monkeypatch.setattr(mssql, "SERVER", mssql.Server())
    levels = [120, 130]
    monkeypatch.setattr("pymssql.connect", lambda **_: ServerConnection("Microsoft SQL Server", levels.pop(0)))

    # When the container connects twice / Then the first is refused and the second checked and accepted
    with pytest.raises(RetryableError):
        mssql.connect("mssql://u:p@db:1433/app", 5)
    assert mssql.connect("mssql://u:p@db:1433/app", 5) is not None
    assert mssql.SERVER.level == 130


def test_compatibility_level_below_130_refuses_to_start(caplog: pytest.LogCaptureFixture) -> None:
    # Given SQL Server with a database at compatibility level 120 (no OPENJSON)
    # When checked at connect
    with pytest.raises(RetryableError) as raised:
        mssql.check_server(ServerConnection("Microsoft SQL Server 2019", 120))

    # Then the function refuses (retryable: nothing is lost) and the log says why and how to fix it
    assert raised.value.kind == "compatibility_level"
    assert "COMPATIBILITY_LEVEL = 130" in caplog.text
    mssql.check_server(ServerConnection("Microsoft SQL Server 2022", 160))


def test_babelfish_reads_text_cells_as_nvarchar_max_and_decodes_their_escapes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given Babelfish, whose OPENJSON ... WITH returns a JSON string cell still escaped
    monkeypatch.setattr(mssql, "SERVER", mssql.Server(babelfish=True, level=120))
    table, key = shapes_table()

    # When the batch insert is built
    statement = mssql.insert_rows_shape(table, key, ["name", "at"]).statement

    # Then the text cell is read as nvarchar(max), decoded where it has a backslash, cast to its type;
    # other cells are read as their own type
    assert "c1 nvarchar(max) '$[1]'" in statement and "c2 datetime2(3) '$[2]'" in statement
    assert "CAST(CASE WHEN CHARINDEX(N'\\', j.c1) = 0 THEN j.c1 ELSE REPLACE(" in statement
    assert statement.count("AS nvarchar(100))") == 1


@pytest.mark.parametrize(
    ("definition", "columns"),
    [
        ("([tags] IS NULL OR isjson([tags])=(1))", {"tags"}),  # SQL Server's normalised text
        ("(((tags IS NULL) OR (isjson(tags) = 1)))", {"tags"}),  # Babelfish keeps the text as written
        ("(ISJSON([odd]]name])=(1))", {"odd]name"}),
        ("([priority]>(0))", set()),
    ],
)
def test_a_check_calling_isjson_makes_its_column_a_json_column(definition: str, columns: set[str]) -> None:
    # Given a CHECK constraint's definition as the catalog gives it
    # When the columns it holds to JSON are read from it
    found = mssql._json_checked([definition])
    # Then they are the columns ISJSON names (a non-JSON value is then INVALID_DATA, never 547)
    assert found == columns
