"""MySQL/MariaDB dialect: classification with real PyMySQL error objects, catalog rows, URL parsing."""

from __future__ import annotations

import pymysql
import pytest

from powersync_upload.convert import InvalidValue, convert
from powersync_upload.dialects import mysql
from powersync_upload.errors import ErrorCode, FatalOpError, Reason, RetryableError
from powersync_upload.schema import BMP_ONLY, Column, Kind


def server_error(number: int, message: str) -> pymysql.err.MySQLError:
    """The exception PyMySQL raises for a server error packet (its own number -> class mapping)."""
    error_class = pymysql.err.error_map.get(number, pymysql.err.InternalError)
    return error_class(number, message)


@pytest.mark.parametrize(
    ("number", "message", "code", "column", "constraint"),
    [
        (1048, "Column 'name' cannot be null", ErrorCode.NOT_NULL_VIOLATION, "name", None),
        (1364, "Field 'name' doesn't have a default value", ErrorCode.NOT_NULL_VIOLATION, "name", None),
        (
            1062,
            "Duplicate entry '1111-secret' for key 'ux_lists_owner_name'",
            ErrorCode.UNIQUE_VIOLATION,
            None,
            "ux_lists_owner_name",
        ),
        (
            1452,
            "Cannot add or update a child row: a foreign key constraint fails (`d`.`todos`, CONSTRAINT `fk`)",
            ErrorCode.FOREIGN_KEY_VIOLATION,
            None,
            None,
        ),
        (4025, "CONSTRAINT `todos.tags` failed for `d`.`todos`", ErrorCode.CHECK_VIOLATION, None, "tags"),
    ],
)
def test_constraint_errors(
    number: int, message: str, code: ErrorCode, column: str | None, constraint: str | None
) -> None:
    # Given a real PyMySQL error / When classified
    result = mysql.classify(server_error(number, message))
    # Then the contract code with the names parsed from the message, and never the value
    assert isinstance(result, FatalOpError)
    assert result.code is code
    assert result.column == column
    assert result.constraint == constraint
    assert result.number == number
    assert "secret" not in result.message and "secret" not in str(result.details())


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        (1406, Reason.TOO_LONG),
        (1264, Reason.OUT_OF_RANGE),
        (1690, Reason.OUT_OF_RANGE),
        (1366, Reason.TYPE),
        (1292, Reason.FORMAT),
    ],
)
def test_data_errors_are_invalid_data(number: int, reason: Reason) -> None:
    result = mysql.classify(server_error(number, "Data too long for column 'description' at row 1"))
    assert isinstance(result, FatalOpError)
    assert result.code is ErrorCode.INVALID_DATA
    assert result.reason is reason


@pytest.mark.parametrize(("number", "in_process"), [(1213, True), (1205, True), (1040, False), (1969, False)])
def test_transient_server_errors_are_retryable(number: int, in_process: bool) -> None:
    result = mysql.classify(server_error(number, "transient"))
    assert isinstance(result, RetryableError)
    assert result.in_process is in_process


def test_a_refused_connection_is_retryable() -> None:
    # Given a real connection failure (nothing listens on port 1)
    with pytest.raises(pymysql.err.OperationalError) as caught:
        pymysql.connect(host="127.0.0.1", port=1, user="root", connect_timeout=2)
    # When classified / Then retryable
    result = mysql.classify(caught.value)
    assert isinstance(result, RetryableError)
    assert result.number == 2003


def test_unknown_numbers_are_unclassified_and_other_exceptions_are_not_ours() -> None:
    result = mysql.classify(server_error(1644, "signal from a trigger"))
    assert isinstance(result, FatalOpError)
    assert result.code is ErrorCode.UNCLASSIFIED_ERROR
    assert mysql.classify(ValueError("not a driver error")) is None


@pytest.mark.parametrize(
    ("column_type", "data_type", "kind"),
    [
        ("tinyint(1)", "tinyint", Kind.BOOLEAN),
        ("int(11)", "int", Kind.INTEGER),
        ("decimal(10,2)", "decimal", Kind.DECIMAL),
        ("datetime(3)", "datetime", Kind.TIMESTAMP),
        ("longtext", "longtext", Kind.TEXT),
        ("json", "json", Kind.JSON),
        ("enum('a','b')", "enum", Kind.OTHER),
    ],
)
def test_catalog_types(column_type: str, data_type: str, kind: Kind) -> None:
    row = ("c", data_type, column_type, "YES", None, "", 100, 10, 2, 3)
    assert mysql.column_from_catalog(row).kind is kind


def test_unsigned_range_mariadb_default_null_and_generated_columns() -> None:
    unsigned = mysql.column_from_catalog(("n", "int", "int(10) unsigned", "NO", None, "", None, 10, 0, None))
    assert unsigned.int_range == (0, 2**32 - 1)
    defaulted_null = mysql.column_from_catalog(("c", "varchar", "varchar(10)", "YES", "NULL", "", 10, None, None, None))
    assert defaulted_null.has_default is False
    generated = mysql.column_from_catalog(("g", "int", "int(11)", "YES", None, "VIRTUAL GENERATED", None, 10, 0, None))
    assert generated.writable is False


def test_connect_args_parse_the_url() -> None:
    args = mysql.connect_args("mysql://app:p%40ss@db.example:3307/shop", 3.7)
    assert (args["host"], args["port"], args["user"], args["password"], args["database"]) == (
        "db.example",
        3307,
        "app",
        "p@ss",
        "shop",
    )
    assert args["connect_timeout"] == 3
    assert "STRICT_ALL_TABLES" in args["init_command"]


def test_quote_doubles_backticks_and_percent() -> None:
    assert mysql.quote("a`b%c") == "`a``b%%c`"


def text_column(charset: str | None, length: int = 10) -> Column:
    """A varchar(length) column of ``charset`` as information_schema.columns reports it."""
    return mysql.column_from_catalog(
        ("code", "varchar", f"varchar({length})", "YES", None, "", length, None, None, None, charset)
    )


@pytest.mark.parametrize(
    ("charset", "encoding"),
    [("latin1", "cp1252"), ("utf8mb3", BMP_ONLY), ("utf8", BMP_ONLY), ("ascii", "ascii"), ("utf8mb4", None)],
)
def test_text_columns_carry_their_character_set(charset: str, encoding: str | None) -> None:
    # Given a varchar column of a character set / When read from the catalog / Then its codec is known
    assert text_column(charset).encoding == encoding


def test_text_outside_a_latin1_column_is_invalid_data_encoding() -> None:
    # Given case 040's introspected varchar(10) CHARACTER SET latin1
    column = text_column("latin1")

    # When Chinese text is converted for it / Then it is refused; Western European text fits
    with pytest.raises(InvalidValue) as caught:
        convert("漢字", column)
    assert caught.value.reason is Reason.ENCODING
    assert convert("Grüße €", column) == "Grüße €"


def test_utf8mb3_refuses_characters_outside_the_basic_multilingual_plane() -> None:
    # Given a utf8mb3 column (MySQL's old "utf8")
    column = text_column("utf8mb3", 20)

    # When text with an emoji is converted / Then it is refused; CJK of the BMP fits
    with pytest.raises(InvalidValue) as caught:
        convert("ok 😀", column)
    assert caught.value.reason is Reason.ENCODING
    assert convert("漢字", column) == "漢字"


def test_an_unknown_character_set_admits_only_ascii() -> None:
    # Given a character set the dialect has no codec for / When read / Then only ASCII is accepted
    column = text_column("armscii8")
    assert convert("plain", column) == "plain"
    with pytest.raises(InvalidValue):
        convert("é", column)
