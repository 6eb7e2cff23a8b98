"""Value conversion (DESIGN.md section 3, "Values"): what each column kind accepts, and why it refuses."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from powersync_upload.convert import InvalidValue, check_key, convert
from powersync_upload.errors import Reason
from powersync_upload.schema import BMP_ONLY, FLOAT32_MAX, INT_RANGES, Column, Kind

SMALLINT = Column("n", Kind.INTEGER, int_range=INT_RANGES["smallint"])
BIGINT = Column("n", Kind.INTEGER, int_range=INT_RANGES["bigint"])
MONEY = Column("amount", Kind.DECIMAL, precision=10, scale=2)
DOUBLE = Column("x", Kind.FLOAT)
REAL = Column("x", Kind.FLOAT, float_max=FLOAT32_MAX)
BOOL = Column("done", Kind.BOOLEAN)
TEXT = Column("s", Kind.TEXT)
NVARCHAR_100 = Column("s", Kind.TEXT, max_length=100, length_unit="utf16")
VARCHAR_100 = Column("s", Kind.TEXT, max_length=100, length_unit="chars")
JSON = Column("tags", Kind.JSON)
UUID = Column("id", Kind.UUID)
TIMESTAMP_3 = Column("at", Kind.TIMESTAMP, fraction_digits=3)
TIMESTAMPTZ_3 = Column("at", Kind.TIMESTAMPTZ, fraction_digits=3)
DATE = Column("day", Kind.DATE)
TIME_3 = Column("t", Kind.TIME, fraction_digits=3)


def reason_of(value: Any, column: Column) -> Reason:
    with pytest.raises(InvalidValue) as caught:
        convert(value, column)
    return caught.value.reason


@pytest.mark.parametrize("column", [SMALLINT, MONEY, DOUBLE, BOOL, TEXT, JSON, UUID, TIMESTAMP_3, DATE, TIME_3])
def test_null_is_null_for_every_kind(column: Column) -> None:
    # Given a null value / When converted / Then it stays None
    assert convert(None, column) is None


# ---- integers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(7, 7), ("7", 7), (" 7 ", 7), ("-7", -7), ("7.0", 7), (Decimal("7.0"), 7), ("1e3", 1000), (32767, 32767)],
)
def test_integer_accepts_exact_numbers_and_numeric_strings(value: Any, expected: int) -> None:
    # Given a smallint column / When an exact integer value arrives / Then it is that int
    result = convert(value, SMALLINT)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize("value", ["7.5", Decimal("7.5"), "abc", "", "7 apples", [7], {"n": 7}])
def test_integer_refuses_inexact_or_non_numeric_values_as_type(value: Any) -> None:
    # Given a smallint column / When a value that is not exactly an integer arrives / Then reason is type
    assert reason_of(value, SMALLINT) is Reason.TYPE


@pytest.mark.parametrize(
    ("value", "column"),
    [
        (40000, SMALLINT),
        (32768, SMALLINT),
        (-32769, SMALLINT),
        (2**63, BIGINT),
        (-(2**63) - 1, BIGINT),
        (99999999999999999999, BIGINT),
        ("99999999999999999999", BIGINT),
        (Decimal("1E+400"), BIGINT),
    ],
)
def test_integer_outside_the_column_range_is_out_of_range(value: Any, column: Column) -> None:
    # Given an integer column / When a value beyond its range arrives / Then reason is out_of_range
    assert reason_of(value, column) is Reason.OUT_OF_RANGE


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63)])
def test_bigint_accepts_its_64_bit_limits(value: int) -> None:
    # Given a bigint column / When its exact limits arrive / Then they are kept
    assert convert(value, BIGINT) == value


# ---- decimals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("19.99"), Decimal("19.99")),
        ("19.99", Decimal("19.99")),
        (Decimal("2.5"), Decimal("2.50")),
        (3, Decimal("3.00")),
        (Decimal("1.005"), Decimal("1.01")),
        (Decimal("1.004"), Decimal("1.00")),
        (Decimal("-1.005"), Decimal("-1.01")),
        (Decimal("99999999.99"), Decimal("99999999.99")),
    ],
)
def test_decimal_keeps_exact_value_rounded_half_up_to_scale(value: Any, expected: Decimal) -> None:
    # Given a decimal(10,2) column / When a number arrives / Then it is exact, at scale 2, rounded half-up
    result = convert(value, MONEY)
    assert result == expected
    assert str(result) == str(expected)


@pytest.mark.parametrize(
    "value", [Decimal("123456789.12"), Decimal("99999999.995"), Decimal("-123456789"), Decimal("1E+400")]
)
def test_decimal_beyond_precision_is_out_of_range(value: Decimal) -> None:
    # Given a decimal(10,2) column (8 integer digits) / When a larger value arrives / Then out_of_range
    assert reason_of(value, MONEY) is Reason.OUT_OF_RANGE


@pytest.mark.parametrize("column", [MONEY, DOUBLE, BIGINT])
def test_nan_is_invalid_for_numbers(column: Column) -> None:
    # Given a numeric column / When NaN arrives (the lenient parser yields a float) / Then type
    assert reason_of(float("nan"), column) is Reason.TYPE


@pytest.mark.parametrize("column", [MONEY, DOUBLE, BIGINT])
@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_infinity_is_out_of_range_for_numbers(column: Column, value: float) -> None:
    # Given a numeric column / When Infinity arrives / Then out_of_range
    assert reason_of(value, column) is Reason.OUT_OF_RANGE


# ---- floats --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(Decimal("2.5"), 2.5), ("2.5", 2.5), (7, 7.0)])
def test_float_accepts_numbers_and_numeric_strings(value: Any, expected: float) -> None:
    # Given a double column / When a number arrives / Then it is that float
    assert convert(value, DOUBLE) == expected


@pytest.mark.parametrize(("value", "column"), [(Decimal("1E+400"), DOUBLE), (Decimal("1E+39"), REAL)])
def test_float_beyond_the_type_is_out_of_range(value: Decimal, column: Column) -> None:
    # Given a double (or 32-bit real) column / When a value beyond its range arrives / Then out_of_range
    assert reason_of(value, column) is Reason.OUT_OF_RANGE


# ---- booleans ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, False),
        (1, True),
        (True, True),
        (False, False),
        ("0", False),
        ("1", True),
        ("true", True),
        ("false", False),
        ("TRUE", True),
        (Decimal("1"), True),
    ],
)
def test_boolean_accepts_0_1_true_false(value: Any, expected: bool) -> None:
    # Given a boolean column / When 0/1, true/false or their text arrives / Then it is a bool
    assert convert(value, BOOL) is expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [(2, Reason.OUT_OF_RANGE), (-1, Reason.OUT_OF_RANGE), ("yes", Reason.TYPE), ("", Reason.TYPE), ([1], Reason.TYPE)],
)
def test_boolean_refuses_other_values(value: Any, reason: Reason) -> None:
    # Given a boolean column / When anything else arrives / Then it is invalid with a reason
    assert reason_of(value, BOOL) is reason


# ---- text ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("héllo", "héllo"),
        (7, "7"),
        (Decimal("2.5"), "2.5"),
        (True, "true"),
        ([1, "a", None], '[1,"a",null]'),
        ({"a": 1, "b": [2]}, '{"a":1,"b":[2]}'),
    ],
)
def test_text_takes_strings_and_other_values_as_json_text(value: Any, expected: str) -> None:
    # Given a text column / When a value arrives / Then strings are kept and the rest become JSON text
    assert convert(value, TEXT) == expected


def test_text_number_keeps_the_digits_that_were_sent() -> None:
    # Given a text column and a number with more digits than a double holds (parsed as Decimal)
    value = Decimal("1.23456789012345678901")

    # When converted
    result = convert(value, TEXT)

    # Then the JSON text has the digits that were sent (json_text: "Decimal keeps its digits")
    assert result == "1.23456789012345678901"


def test_sixty_emoji_exceed_nvarchar_100_in_utf16_units() -> None:
    # Given 60 emoji: 60 characters, 120 UTF-16 code units
    value = "\U0001f600" * 60

    # When / Then nvarchar(100), which counts UTF-16 units, refuses them as too_long
    assert reason_of(value, NVARCHAR_100) is Reason.TOO_LONG


def test_sixty_emoji_fit_a_100_character_column() -> None:
    # Given 60 emoji / When stored in a column counted in characters / Then they are kept
    value = "\U0001f600" * 60
    assert convert(value, VARCHAR_100) == value


@pytest.mark.parametrize("column", [VARCHAR_100, NVARCHAR_100])
def test_text_at_the_limit_fits_and_one_more_is_too_long(column: Column) -> None:
    # Given a 100-unit column / When 100 and 101 ASCII characters arrive / Then only the first fits
    assert convert("x" * 100, column) == "x" * 100
    assert reason_of("x" * 101, column) is Reason.TOO_LONG


def test_json_text_of_a_number_is_length_checked() -> None:
    # Given a column of 3 characters / When a 4-digit number arrives / Then its text is too long
    assert reason_of(1234, Column("s", Kind.TEXT, max_length=3)) is Reason.TOO_LONG


@pytest.mark.parametrize("value", ["a\ud800b", "a\x00b"], ids=["lone-surrogate", "nul"])
def test_text_with_lone_surrogate_or_nul_is_format(value: str) -> None:
    # Given text no database can store / When converted / Then format
    assert reason_of(value, TEXT) is Reason.FORMAT


# ---- JSON ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ['{"a": 1}', "[1, 2]", '"s"', "5", "null"])
def test_json_column_keeps_valid_json_text_as_sent(value: str) -> None:
    # Given a JSON column / When valid JSON text arrives / Then it is stored unchanged
    assert convert(value, JSON) == value


@pytest.mark.parametrize(("value", "expected"), [([1, 2], "[1,2]"), ({"a": [1, "b"]}, '{"a":[1,"b"]}'), (5, "5")])
def test_json_column_turns_values_into_compact_json_text(value: Any, expected: str) -> None:
    # Given a JSON column / When an array, object or number arrives / Then it becomes compact JSON text
    assert convert(value, JSON) == expected


@pytest.mark.parametrize("value", ["[a,", "", "NaN", "{'a': 1}"])
def test_json_column_refuses_invalid_json_text(value: str) -> None:
    # Given a JSON column / When text that is not JSON arrives / Then format
    assert reason_of(value, JSON) is Reason.FORMAT


# ---- UUID ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "A0eebc99-9C0B-4ef8-BB6d-6bb9bd380A11",
    ],
)
def test_uuid_is_case_insensitive_and_canonical(value: str) -> None:
    # Given a UUID column / When canonical text in any case arrives
    converted = convert(value, UUID)

    # Then it is the same UUID, hashed as one, with the canonical lower-case text
    plain = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    assert converted == plain and hash(converted) == hash(plain) and {plain: 1}[converted] == 1
    assert isinstance(converted, uuid.UUID)
    assert str(converted) == str(plain) and converted.hex == plain.hex and converted.version == 4


@pytest.mark.parametrize(
    "value",
    [
        "not-a-uuid",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\n",
        " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    ],
)
def test_uuid_refuses_non_canonical_text_as_format(value: str) -> None:
    # Given a UUID column / When text not in 8-4-4-4-12 form arrives / Then format
    assert reason_of(value, UUID) is Reason.FORMAT


def test_uuid_refuses_a_number_as_type() -> None:
    # Given a UUID column / When a number arrives / Then type
    assert reason_of(5, UUID) is Reason.TYPE


# ---- timestamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5)),
        ("2024-01-02 03:04:05Z", datetime(2024, 1, 2, 3, 4, 5)),
        ("2024-01-02T03:04:05", datetime(2024, 1, 2, 3, 4, 5)),
        ("2024-01-02T03:04:05+02:00", datetime(2024, 1, 2, 1, 4, 5)),
        ("2024-01-02T03:04:05-0530", datetime(2024, 1, 2, 8, 34, 5)),
        ("2024-01-01T01:00:00+02:00", datetime(2023, 12, 31, 23, 0, 0)),
    ],
)
def test_timestamp_without_zone_is_naive_utc(value: str, expected: datetime) -> None:
    # Given a timestamp column without zone / When ISO text with T or space, Z or offset arrives
    result = convert(value, TIMESTAMP_3)

    # Then it is the UTC instant as a naive datetime
    assert result == expected
    assert result.tzinfo is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-02T03:04:05+02:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))),
        ("2024-01-02 03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ],
)
def test_timestamptz_keeps_the_offset_and_reads_naive_as_utc(value: str, expected: datetime) -> None:
    # Given a timestamp-with-zone column / When ISO text arrives
    result = convert(value, TIMESTAMPTZ_3)

    # Then the sent offset is kept (naive text is UTC)
    assert result == expected
    assert result.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-02T03:04:05.123456Z", datetime(2024, 1, 2, 3, 4, 5, 123000)),
        ("2024-01-02T03:04:05.1235Z", datetime(2024, 1, 2, 3, 4, 5, 124000)),
        ("2024-01-02T03:04:05.9996Z", datetime(2024, 1, 2, 3, 4, 6)),
        ("2024-12-31T23:59:59.9996Z", datetime(2025, 1, 1, 0, 0, 0)),
    ],
)
def test_timestamp_is_rounded_to_the_column_fraction_digits(value: str, expected: datetime) -> None:
    # Given a timestamp column keeping 3 fractional digits / When more digits arrive
    # Then the value is rounded half-up, carrying into the next second (and year) when needed
    assert convert(value, TIMESTAMP_3) == expected


@pytest.mark.parametrize("column", [TIMESTAMP_3, TIMESTAMPTZ_3])
@pytest.mark.parametrize(
    "value", ["2024-13-45T00:00:00Z", "not a date", "2024-01-02T25:00:00Z", "2024-01-02T03:04:05+24:00"]
)
def test_timestamp_that_is_not_a_date_is_format(column: Column, value: str) -> None:
    # Given a timestamp column / When text that is not a valid ISO timestamp arrives / Then format
    assert reason_of(value, column) is Reason.FORMAT


def test_timestamp_refuses_a_number_as_type() -> None:
    # Given a timestamp column / When a number arrives (epoch seconds are not ISO text) / Then type
    assert reason_of(1704164645, TIMESTAMP_3) is Reason.TYPE


# ---- date and time -------------------------------------------------------------------------------


def test_date_accepts_a_real_day() -> None:
    # Given a date column / When a leap day arrives / Then it is that date
    assert convert("2024-02-29", DATE) == date(2024, 2, 29)


@pytest.mark.parametrize("value", ["2023-02-29", "2024-2-9", "20240229", "2024-02-29T00:00:00", "tomorrow"])
def test_date_refuses_impossible_or_non_iso_days(value: str) -> None:
    # Given a date column / When an impossible or non YYYY-MM-DD day arrives / Then format
    assert reason_of(value, DATE) is Reason.FORMAT


@pytest.mark.parametrize(
    ("value", "expected"),
    [("13:45:10.250", time(13, 45, 10, 250000)), ("13:45", time(13, 45)), ("13:45:10.2505", time(13, 45, 10, 251000))],
)
def test_time_accepts_iso_times_rounded_to_the_column(value: str, expected: time) -> None:
    # Given a time column keeping 3 fractional digits / When an ISO time arrives / Then it is that time
    assert convert(value, TIME_3) == expected


def test_time_rounding_never_wraps_past_midnight() -> None:
    # Given a time just before midnight that would round up to 24:00
    # When converted / Then it stays on the same day at the largest representable time
    assert convert("23:59:59.9996", TIME_3) == time(23, 59, 59, 999000)


@pytest.mark.parametrize("value", ["13:61:00", "25:00:00", "1:02", "noon"])
def test_time_refuses_impossible_times(value: str) -> None:
    # Given a time column / When an impossible time arrives / Then format
    assert reason_of(value, TIME_3) is Reason.FORMAT


@pytest.mark.parametrize(
    ("value", "column"),
    [
        ("\u0663", Column(name="n", kind=Kind.INTEGER)),  # Arabic-Indic three
        ("\uff11\uff12", Column(name="n", kind=Kind.INTEGER)),  # fullwidth twelve
        ("\uff12.\uff15", Column(name="n", kind=Kind.DECIMAL, precision=5, scale=2)),
        ("\uff12\uff10\uff12\uff16-12-01T10:00:00Z", Column(name="t", kind=Kind.TIMESTAMP, fraction_digits=3)),
        ("\uff11\uff10:00", Column(name="t", kind=Kind.TIME)),
    ],
)
def test_digits_other_than_ascii_are_not_numbers_or_times(value: str, column: Column) -> None:
    # Given a numeric or time column and text whose digits are not 0-9
    # Then it is refused, not read as the number Python's int() would make of it
    with pytest.raises(InvalidValue):
        convert(value, column)


def test_text_a_column_character_set_cannot_hold_is_rejected_as_encoding() -> None:
    # Given a column storing Windows-1252 (SQL Server code page 1252, MySQL latin1)
    column = Column("code", Kind.TEXT, max_length=10, encoding="cp1252")

    # When text outside it is converted / Then it is INVALID_DATA encoding, never '?'
    with pytest.raises(InvalidValue) as caught:
        convert("漢字", column)
    assert caught.value.reason is Reason.ENCODING


def test_byte_lengths_are_counted_in_the_column_character_set() -> None:
    # Given varchar(3) counted in bytes of cp1252, where é and € take one byte each (UTF-8: 2 and 3)
    column = Column("code", Kind.TEXT, max_length=3, length_unit="bytes", encoding="cp1252")

    # When three such characters are converted / Then they fit; four do not
    assert convert("é€a", column) == "é€a"
    with pytest.raises(InvalidValue) as caught:
        convert("é€ab", column)
    assert caught.value.reason is Reason.TOO_LONG


def test_bmp_only_columns_refuse_supplementary_characters() -> None:
    # Given a MySQL utf8mb3 column / When an emoji is converted / Then encoding; other text passes
    column = Column("code", Kind.TEXT, encoding=BMP_ONLY)
    with pytest.raises(InvalidValue) as caught:
        convert("😀", column)
    assert caught.value.reason is Reason.ENCODING
    assert convert("漢字", column) == "漢字"


@pytest.mark.parametrize(
    ("pads", "ignores_case", "key", "refused"),
    [
        (True, False, "x ", True),
        (True, False, "x", False),
        (True, False, "X", False),
        (False, False, "x ", False),
        (False, True, "X", True),
        (False, True, "x", False),
        (False, True, "C0000000-0000-4000-8000-00000000000A", False),
        (True, True, " x", False),
    ],
)
def test_a_key_the_column_would_fold_onto_another_id_is_refused(
    pads: bool, ignores_case: bool, key: str, refused: bool
) -> None:
    # Given a text key column that pads and/or ignores case
    column = Column("id", Kind.TEXT, pads_spaces=pads, ignores_case=ignores_case)
    # When / Then: an id it would fold onto a different id is INVALID_DATA format, others pass
    if refused:
        with pytest.raises(InvalidValue) as caught:
            check_key(key, column)
        assert caught.value.reason is Reason.FORMAT
    else:
        check_key(key, column)


def test_collations_are_read_into_key_folding_per_dialect() -> None:
    from powersync_upload.dialects import mssql, mysql

    assert mysql.key_folding("utf8mb4_bin") == {"pads_spaces": True, "ignores_case": False}
    assert mysql.key_folding("utf8mb4_unicode_ci") == {"pads_spaces": True, "ignores_case": True}
    assert mysql.key_folding("utf8mb4_nopad_bin") == {"pads_spaces": False, "ignores_case": False}
    assert mysql.key_folding("utf8mb4_0900_as_cs") == {"pads_spaces": False, "ignores_case": False}
    assert mssql.key_folding("SQL_Latin1_General_CP1_CI_AS") == {"pads_spaces": True, "ignores_case": True}
    assert mssql.key_folding("Latin1_General_100_CS_AS_SC_UTF8") == {"pads_spaces": True, "ignores_case": False}
