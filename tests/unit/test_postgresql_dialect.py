"""PostgreSQL dialect: classification by SQLSTATE with real psycopg errors, catalog rows, upsert SQL text."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from powersync_upload.dialects import _sql, postgresql
from powersync_upload.errors import ErrorCode, FatalOpError, Reason, RetryableError
from powersync_upload.schema import INT_RANGES, Kind
from tests.support import classified_as


def pg_error(sqlstate: str) -> psycopg.Error:
    """The psycopg exception class the server's SQLSTATE maps to."""
    return psycopg.errors.lookup(sqlstate)("server message with a value: secret")


def fatal(exc: BaseException) -> FatalOpError:
    return classified_as(FatalOpError, postgresql.classify(exc))


def retryable(exc: BaseException) -> RetryableError:
    return classified_as(RetryableError, postgresql.classify(exc))


# ---- classification ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sqlstate", "code", "reason"),
    [
        ("23502", ErrorCode.NOT_NULL_VIOLATION, None),
        ("23505", ErrorCode.UNIQUE_VIOLATION, None),
        ("23503", ErrorCode.FOREIGN_KEY_VIOLATION, None),
        ("23514", ErrorCode.CHECK_VIOLATION, None),
        ("23P01", ErrorCode.CONSTRAINT_VIOLATION, None),
        ("22001", ErrorCode.INVALID_DATA, Reason.TOO_LONG),
        ("22003", ErrorCode.INVALID_DATA, Reason.OUT_OF_RANGE),
        ("22P02", ErrorCode.INVALID_DATA, Reason.FORMAT),
        ("22007", ErrorCode.INVALID_DATA, Reason.FORMAT),
        ("22012", ErrorCode.INVALID_DATA, Reason.TYPE),
    ],
)
def test_integrity_and_data_errors_map_to_a_code_and_reason(
    sqlstate: str, code: ErrorCode, reason: Reason | None
) -> None:
    # Given an integrity error (class 23) or a data exception (class 22) / When classified
    result = fatal(pg_error(sqlstate))
    # Then its constraint code, or INVALID_DATA with the matching reason; the SQLSTATE as number
    assert (result.code, result.reason) == (code, reason)
    assert result.number == sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "kind"), [("40P01", "deadlock"), ("55P03", "lock_timeout"), ("40001", "serialization_failure")]
)
def test_deadlock_lock_timeout_and_serialization_failure_are_retried_in_process(sqlstate: str, kind: str) -> None:
    # Given a deadlock, lock timeout or serialization failure / When classified
    result = retryable(pg_error(sqlstate))

    # Then the engine may retry it itself
    assert result.in_process is True
    assert result.kind == kind


@pytest.mark.parametrize(
    ("sqlstate", "kind"),
    [
        ("57014", "timeout"),
        ("08006", "connection"),
        ("08001", "connection"),
        ("57P01", "admin_shutdown"),
        ("53300", "too_many_connections"),
    ],
)
def test_timeouts_and_connection_failures_are_retryable_by_the_client(sqlstate: str, kind: str) -> None:
    # Given a statement timeout, a lost connection or a server going away / When classified
    result = retryable(pg_error(sqlstate))

    # Then the client retries (not in process: the statement may have run long already)
    assert result.in_process is False
    assert result.kind == kind


def test_connection_error_without_sqlstate_is_retryable() -> None:
    # Given psycopg's OperationalError raised by the client library (no SQLSTATE)
    # When / Then it is a retryable connection failure
    assert retryable(psycopg.OperationalError("connection lost")).kind == "connection"


@pytest.mark.parametrize("sqlstate", ["42703", "42P01"])
def test_unknown_column_or_table_is_schema_mismatch(sqlstate: str) -> None:
    # Given an undefined column or table / When classified / Then SCHEMA_MISMATCH
    assert fatal(pg_error(sqlstate)).code is ErrorCode.SCHEMA_MISMATCH


def test_insufficient_privilege_is_unauthorized() -> None:
    # Given 42501 / When classified / Then UNAUTHORIZED
    assert fatal(pg_error("42501")).code is ErrorCode.UNAUTHORIZED


@pytest.mark.parametrize("sqlstate", ["P0001", "XX000", "42601"])
def test_other_sqlstates_are_unclassified_with_the_sqlstate(sqlstate: str) -> None:
    # Given a trigger's RAISE EXCEPTION, an internal error or a syntax error / When classified
    result = fatal(pg_error(sqlstate))

    # Then UNCLASSIFIED_ERROR carrying only the SQLSTATE
    assert result.code is ErrorCode.UNCLASSIFIED_ERROR
    assert result.details() == {"error_number": sqlstate}


def test_message_never_contains_the_server_text() -> None:
    # Given a unique violation whose server text carries a value / When classified
    result = fatal(pg_error("23505"))

    # Then our message and details do not repeat it
    assert "secret" not in result.message
    assert "secret" not in str(result.details())


@pytest.mark.parametrize("exc", [ValueError("x"), OSError("disk"), RuntimeError("boom")])
def test_non_psycopg_exception_is_not_classified(exc: BaseException) -> None:
    # Given an exception that does not come from the driver / When classified / Then None
    assert postgresql.classify(exc) is None


# ---- catalog -------------------------------------------------------------------------------------


def catalog_row(
    name: str,
    data_type: str,
    *,
    udt: str = "",
    nullable: str = "YES",
    default: str | None = None,
    identity: str = "NO",
    generated: str = "NEVER",
    max_len: int | None = None,
    precision: int | None = None,
    scale: int | None = None,
    dt_precision: int | None = None,
) -> tuple[Any, ...]:
    """One row of postgresql._INTROSPECT (information_schema.columns)."""
    return (name, data_type, udt, nullable, default, identity, generated, max_len, precision, scale, dt_precision)


@pytest.mark.parametrize(
    ("row", "kind"),
    [
        (catalog_row("b", "boolean"), Kind.BOOLEAN),
        (catalog_row("u", "uuid"), Kind.UUID),
        (catalog_row("j", "jsonb"), Kind.JSON),
        (catalog_row("j", "json"), Kind.JSON),
        (catalog_row("d", "date"), Kind.DATE),
        (catalog_row("t", "time without time zone", dt_precision=6), Kind.TIME),
        (catalog_row("s", "text"), Kind.TEXT),
        (catalog_row("f", "double precision"), Kind.FLOAT),
        (catalog_row("e", "USER-DEFINED", udt="mood"), Kind.OTHER),
    ],
)
def test_types_map_to_their_kind(row: tuple[Any, ...], kind: Kind) -> None:
    # Given a column type / When read / Then the matching conversion kind
    assert postgresql.column_from_catalog(row).kind is kind


@pytest.mark.parametrize(("data_type", "width"), [("smallint", "smallint"), ("integer", "int"), ("bigint", "bigint")])
def test_integer_types_have_their_ranges(data_type: str, width: str) -> None:
    # Given an integer type / When read / Then its range is checked
    column = postgresql.column_from_catalog(catalog_row("n", data_type))
    assert (column.kind, column.int_range) == (Kind.INTEGER, INT_RANGES[width])


def test_varchar_n_counts_characters() -> None:
    # Given varchar(100) NOT NULL / When read / Then 100 characters, not nullable
    column = postgresql.column_from_catalog(catalog_row("name", "character varying", nullable="NO", max_len=100))
    assert (column.kind, column.max_length, column.length_unit, column.nullable) == (Kind.TEXT, 100, "chars", False)


def test_numeric_keeps_precision_and_scale() -> None:
    # Given numeric(10,2) / When read / Then decimal with precision 10, scale 2
    column = postgresql.column_from_catalog(catalog_row("amount", "numeric", precision=10, scale=2))
    assert (column.kind, column.precision, column.scale) == (Kind.DECIMAL, 10, 2)


def test_real_is_32_bit() -> None:
    # Given real / When read / Then its float limit is float32's
    column = postgresql.column_from_catalog(catalog_row("r", "real"))
    assert column.float_max is not None
    assert column.float_max < 1e39


@pytest.mark.parametrize(
    ("data_type", "dt_precision", "kind", "digits"),
    [
        ("timestamp without time zone", 3, Kind.TIMESTAMP, 3),
        ("timestamp without time zone", None, Kind.TIMESTAMP, 6),
        ("timestamp with time zone", 6, Kind.TIMESTAMPTZ, 6),
        ("timestamp with time zone", 0, Kind.TIMESTAMPTZ, 0),
    ],
)
def test_timestamps_keep_zone_and_precision(data_type: str, dt_precision: int | None, kind: Kind, digits: int) -> None:
    # Given a timestamp type with a precision / When read / Then kind and fractional digits follow it
    column = postgresql.column_from_catalog(catalog_row("at", data_type, dt_precision=dt_precision))
    assert (column.kind, column.fraction_digits) == (kind, digits)


def test_default_and_generated_columns() -> None:
    # Given a column with a default and a generated column / When read
    with_default = postgresql.column_from_catalog(
        catalog_row("created_at", "timestamp with time zone", default="now()", dt_precision=6)
    )
    generated = postgresql.column_from_catalog(catalog_row("total", "integer", generated="ALWAYS"))

    # Then the default is known and the generated column is not writable
    assert with_default.has_default is True
    assert with_default.writable is True
    assert generated.writable is False


def test_identity_column_is_not_writable() -> None:
    # Given an identity column (schema.Column: "writable: False for identity, computed and generated columns";
    # a GENERATED ALWAYS identity rejects client values with 428C9)
    column = postgresql.column_from_catalog(catalog_row("seq", "bigint", nullable="NO", identity="YES"))

    # When / Then it has a default and clients cannot write it
    assert column.has_default is True
    assert column.writable is False


# ---- SQL text ------------------------------------------------------------------------------------


def test_quote_doubles_double_quotes_and_percent() -> None:
    # Given names with " and % / When quoted / Then neither can end the name or become a placeholder
    assert postgresql.quote('a"b') == '"a""b"'
    assert postgresql.quote("50%s") == '"50%%s"'


def test_on_conflict_upsert_updates_only_on_a_key_collision() -> None:
    # Given a PUT writing a and b and clearing c
    # When its SQL is built for PostgreSQL
    sql = _sql.on_conflict_upsert_sql('"public"."todos"', '"id"', ['"a"', '"b"'], ['"c"'], "%s", None, "EXCLUDED")

    # Then the key comes first, a collision on the key (only) updates in place, and c becomes NULL
    assert sql == (
        'INSERT INTO "public"."todos" ("id", "a", "b") VALUES (%s, %s, %s) '
        'ON CONFLICT ("id") DO UPDATE SET "a" = EXCLUDED."a", "b" = EXCLUDED."b", "c" = NULL'
    )


def test_on_conflict_upsert_with_an_owner_guard() -> None:
    # Given a PUT on an owned table / When its SQL is built with the owner column as guard
    sql = _sql.on_conflict_upsert_sql('"todos"', '"id"', ['"owner_id"'], [], "%s", '"owner_id"', "EXCLUDED")

    # Then the update only happens where the stored owner equals the inserted one
    assert sql.endswith(' WHERE "todos"."owner_id" = EXCLUDED."owner_id"')


def test_on_conflict_upsert_with_only_the_key_is_still_valid_sql() -> None:
    # Given a PUT of a row with only its key / When its SQL is built
    sql = _sql.on_conflict_upsert_sql('"todos"', '"id"', [], [], "%s", None, "EXCLUDED")

    # Then the update sets the key to itself (DO UPDATE needs a SET; the row is locked and counted)
    assert sql == 'INSERT INTO "todos" ("id") VALUES (%s) ON CONFLICT ("id") DO UPDATE SET "id" = EXCLUDED."id"'
