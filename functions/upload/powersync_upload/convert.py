"""Validate and convert one client value for one server column, in Python, before any SQL runs.

Client values are SQLite-typed JSON (text, integer, real, null; booleans as 0/1; timestamps as
ISO-8601 text; JSON as text). The body is parsed with ``parse_float=Decimal``, so non-integer numbers
arrive here as :class:`~decimal.Decimal` with their exact digits, and ``NaN``/``Infinity`` as floats.
The rules are those of DESIGN.md section 3 ("Values"):

* numbers may arrive as numeric strings and are accepted when the conversion is exact;
* booleans accept 0/1, true/false and "0"/"1"/"true"/"false";
* text columns take strings, and numbers, booleans, arrays and objects as their JSON text;
* integers are range-checked against the column type; decimals keep their exact value, are rounded
  half-up to the column's scale (as SQL Server and PostgreSQL do) and checked against its precision;
* naive timestamps are UTC; offsets are converted to UTC for columns without a zone and kept where
  the type has one; fractional seconds are rounded to the column's precision;
* UUID columns take canonical 8-4-4-4-12 text in either case;
* text a column's character set cannot hold (``Column.encoding``: a SQL Server code page, a MySQL
  ``latin1`` or ``utf8mb3`` column) is rejected with reason ``encoding``: the database would store
  ``?`` in its place without an error.

A value that breaks a rule raises :class:`InvalidValue` with a :class:`~powersync_upload.errors.Reason`.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any, TypeVar

from .errors import Reason
from .schema import BMP_ONLY, Column, Kind


class InvalidValue(Exception):
    """The value cannot be stored in the column; ``reason`` says why (never echoes the value)."""

    def __init__(self, reason: Reason) -> None:
        self.reason = reason
        super().__init__(reason.value)


# re.ASCII: \d is 0-9 only (Python's \d also takes Arabic-Indic, fullwidth... digits, which no database
# column parses the same way).
_NUMERIC_TEXT = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$", re.ASCII)
_UUID_TEXT = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_UUID_MATCH = _UUID_TEXT.fullmatch
_TIMESTAMP_TEXT = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,12}))?)?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?$",
    re.ASCII,
)
_TIME_TEXT = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,12}))?)?$", re.ASCII)
_WIDE = Context(prec=1000)
_MAX_EXPONENT = 1000  # digits before the point we are willing to look at


def convert(value: Any, column: Column) -> Any:
    """Convert a client value for ``column``.

    Args:
        value: a JSON value (``None``, ``bool``, ``int``, ``Decimal``, ``float``, ``str``, ``list``,
            ``dict``), or an already-typed value read back from the database.
        column: the server column.

    Returns:
        ``None`` for ``None``; otherwise ``str`` (text, JSON text, other), ``int``, ``Decimal``
        (quantized to the scale), ``float``, ``bool``, ``uuid.UUID``, naive UTC ``datetime``
        (timestamp), aware ``datetime`` (timestamptz), ``date`` or ``time``.

    Raises:
        InvalidValue: the value breaks a rule of the module docstring.
    """
    if value is None:
        return None
    converter = _CONVERTERS[column.kind]
    return converter(value, column)


Converter = Callable[[Any, Column], Any]
"""A conversion rule: ``(value, column) -> converted``, for a value that is not ``None``."""


def converter(column: Column) -> Converter:
    """The rule :func:`convert` applies to ``column``'s values, for callers converting many values of
    one column: ``converter(column)(value, column)`` is ``convert(value, column)`` when ``value`` is
    not ``None``."""
    return _CONVERTERS[column.kind]


_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def check_key(value: Any, column: Column) -> None:
    """Refuse a row id that the key column would fold onto a different id (DESIGN.md section 3, "One
    device id, one row"): the device compares ids byte for byte, so ``"x"`` and ``"x "`` (or ``"X"``)
    are two rows there and must not be one row here.

    Rules, on text keys only: under a padding comparison (:attr:`Column.pads_spaces`) an id ending in a
    space; under a case-insensitive one (:attr:`Column.ignores_case`) an id with upper-case letters,
    unless it is a UUID (the same UUID in any case is one id; UUID-typed keys are never refused).

    Raises:
        InvalidValue: reason ``format``.
    """
    if column.kind is not Kind.TEXT or not isinstance(value, str):
        return
    if column.pads_spaces and value.endswith(" "):
        raise InvalidValue(Reason.FORMAT)
    if column.ignores_case and value != value.lower() and not _UUID_TEXT.fullmatch(value):
        raise InvalidValue(Reason.FORMAT)


def json_text(value: Any) -> str:
    """Compact JSON text of a client value; a ``Decimal`` keeps the digits that were sent.

    Raises:
        InvalidValue: the value holds NaN or Infinity (not JSON).
    """
    nonce = uuid.uuid4().hex
    numbers: list[str] = []

    def plain(item: Any) -> Any:
        if isinstance(item, Decimal):
            if not item.is_finite():
                raise InvalidValue(Reason.FORMAT)
            numbers.append(str(item))
            return f"{nonce}{len(numbers) - 1}"
        if isinstance(item, list):
            return [plain(v) for v in item]
        if isinstance(item, dict):
            return {str(k): plain(v) for k, v in item.items()}
        return item

    try:
        text = json.dumps(plain(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (ValueError, RecursionError) as exc:
        raise InvalidValue(Reason.FORMAT) from exc
    for index, number in enumerate(numbers):
        text = text.replace(f'"{nonce}{index}"', number, 1)
    return text


def _checked_text(text: str, column: Column) -> str:
    if text.isascii() and column.encoding is None:  # the common case: one unit per character, whatever the unit
        if "\x00" in text:
            raise InvalidValue(Reason.FORMAT)
        if column.max_length is not None and len(text) > column.max_length:
            raise InvalidValue(Reason.TOO_LONG)
        return text
    return _checked_wide(text, column)


def _checked_wide(text: str, column: Column) -> str:
    """:func:`_checked_text` for text that is not ASCII, or for a column with its own character set."""
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise InvalidValue(Reason.FORMAT) from exc
    if "\x00" in text:
        raise InvalidValue(Reason.FORMAT)
    if column.encoding is not None:
        encoded = _encoded(text, column.encoding)
    if column.max_length is not None:
        if column.length_unit == "utf16":
            length = len(text.encode("utf-16-le", "surrogatepass")) // 2
        elif column.length_unit == "bytes":
            length = len(encoded)
        else:
            length = len(text)
        if length > column.max_length:
            raise InvalidValue(Reason.TOO_LONG)
    return text


def _encoded(text: str, encoding: str) -> bytes:
    """``text`` in the column's character set (UTF-8 for :data:`BMP_ONLY`); INVALID_DATA ``encoding``
    when a character has no place in it."""
    if encoding == BMP_ONLY:
        if any(ord(char) > 0xFFFF for char in text):
            raise InvalidValue(Reason.ENCODING)
        return text.encode("utf-8")
    try:
        return text.encode(encoding)
    except UnicodeEncodeError as exc:
        raise InvalidValue(Reason.ENCODING) from exc


def _to_text(value: Any, column: Column) -> str:
    if isinstance(value, str):
        return _checked_text(value, column)
    return _checked_text(json_text(value), column)


def _to_json(value: Any, column: Column) -> str:
    if isinstance(value, str):
        try:
            json.loads(value, parse_constant=_reject_constant)
        except ValueError as exc:
            raise InvalidValue(Reason.FORMAT) from exc
        return _checked_text(value, column)
    return _checked_text(json_text(value), column)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _to_decimal_exact(value: Any) -> Decimal:
    """Any numeric client value as an exact Decimal; raises InvalidValue for non-numbers."""
    if isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue(Reason.OUT_OF_RANGE if math.isinf(value) else Reason.TYPE)
        number = Decimal(repr(value))
    elif isinstance(value, str) and _NUMERIC_TEXT.match(value):
        number = Decimal(value.strip())
    else:
        raise InvalidValue(Reason.TYPE)
    if number.is_nan():
        raise InvalidValue(Reason.TYPE)
    if number.is_infinite() or number.adjusted() > _MAX_EXPONENT:
        raise InvalidValue(Reason.OUT_OF_RANGE)
    return number


def _to_integer(value: Any, column: Column) -> int:
    number = _to_decimal_exact(value)
    if number.adjusted() > 40:
        raise InvalidValue(Reason.OUT_OF_RANGE)
    if number != number.to_integral_value(context=_WIDE):
        raise InvalidValue(Reason.TYPE)
    result = int(number)
    if column.int_range is not None:
        low, high = column.int_range
        if not low <= result <= high:
            raise InvalidValue(Reason.OUT_OF_RANGE)
    return result


def _to_decimal(value: Any, column: Column) -> Decimal:
    number = _to_decimal_exact(value)
    if column.scale is not None:
        try:
            number = number.quantize(Decimal(1).scaleb(-column.scale), rounding=ROUND_HALF_UP, context=_WIDE)
        except InvalidOperation as exc:
            raise InvalidValue(Reason.OUT_OF_RANGE) from exc
    if column.precision is not None:
        scale = column.scale or 0
        integer_digits = number.adjusted() + 1 if number != 0 else 0
        if integer_digits > column.precision - scale:
            raise InvalidValue(Reason.OUT_OF_RANGE)
    return number


def _to_float(value: Any, column: Column) -> float:
    number = _to_decimal_exact(value)
    result = float(number)
    limit = column.float_max if column.float_max is not None else 1.7976931348623157e308
    if not math.isfinite(result) or abs(result) > limit:
        raise InvalidValue(Reason.OUT_OF_RANGE)
    return result


_TRUE_TEXT = {"1": True, "true": True, "0": False, "false": False}


def _to_boolean(value: Any, column: Column) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        if value in (0, 1):
            return bool(value)
        raise InvalidValue(Reason.OUT_OF_RANGE)
    if isinstance(value, str) and value.strip().lower() in _TRUE_TEXT:
        return _TRUE_TEXT[value.strip().lower()]
    raise InvalidValue(Reason.TYPE)


_set = object.__setattr__
_UNKNOWN = uuid.SafeUUID.unknown


class TextUUID(uuid.UUID):
    """A :class:`uuid.UUID` made from checked text, keeping its canonical (lower-case) text: a key is
    converted once, then turned into text several times per operation (the planner's row identity,
    the drivers that take UUIDs as text), which ``uuid.UUID.__str__`` recomputes each time. Equal to,
    and hashed as, the plain UUID of the same value."""

    __slots__ = ("_text",)
    _text: str

    def __init__(self, text: str) -> None:  # text matched _UUID_TEXT: 32 hex digits, 4 hyphens
        _set(self, "int", int(text.replace("-", ""), 16))  # uuid.UUID forbids setattr: as its __init__ does
        _set(self, "is_safe", _UNKNOWN)
        _set(self, "_text", text.lower())

    def __str__(self) -> str:
        return self._text


def _to_uuid(value: Any, column: Column) -> uuid.UUID:
    if type(value) is str and _UUID_MATCH(value):  # the common case first: a key as the client sends it
        return TextUUID(value)
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str) and _UUID_MATCH(value):
        return TextUUID(value)
    raise InvalidValue(Reason.FORMAT if isinstance(value, str) else Reason.TYPE)


def _fraction(digits: str | None, keep: int) -> tuple[int, bool]:
    """Microseconds from fractional-second digits rounded half-up to ``keep`` digits; and a carry flag."""
    if not digits:
        return 0, False
    keep = max(0, min(keep, 6))
    rounded = Decimal("0." + digits).quantize(Decimal(1).scaleb(-keep), rounding=ROUND_HALF_UP)
    if rounded >= 1:
        return 0, True
    return int(rounded * 1_000_000), False


def _offset(text: str | None) -> timezone | None:
    if text is None:
        return None
    if text in ("Z", "z"):
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    if hours > 23 or minutes > 59:
        raise InvalidValue(Reason.FORMAT)
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


T = TypeVar("T")


def _stripped(value: Any) -> str:
    """``value`` without surrounding white space; INVALID_DATA ``type`` when it is not text."""
    if not isinstance(value, str):
        raise InvalidValue(Reason.TYPE)
    return value.strip()


def _matched(value: Any, pattern: re.Pattern[str]) -> re.Match[str]:
    """``pattern`` matched on the text ``value`` (stripped); INVALID_DATA ``type`` when it is not text,
    ``format`` when it does not match."""
    match = pattern.match(_stripped(value))
    if not match:
        raise InvalidValue(Reason.FORMAT)
    return match


def _built(build: Callable[..., T], *args: Any) -> T:
    """``build(*args)`` (``date.fromisoformat``, ``time``); INVALID_DATA ``format`` when it raises
    ``ValueError`` (a date or time that does not exist)."""
    try:
        return build(*args)
    except ValueError as exc:
        raise InvalidValue(Reason.FORMAT) from exc


def _parse_timestamp(value: Any, column: Column) -> datetime:
    if isinstance(value, datetime):
        return value
    match = _matched(value, _TIMESTAMP_TEXT)
    year, month, day, hour, minute, second, frac, zone = match.groups()
    micros, carry = _fraction(frac, column.fraction_digits)
    try:
        result = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micros,
            tzinfo=_offset(zone),
        )
        if carry:
            result += timedelta(seconds=1)
    except (ValueError, OverflowError) as exc:
        raise InvalidValue(Reason.FORMAT) from exc
    return result


def _to_timestamp(value: Any, column: Column) -> datetime:
    result = _parse_timestamp(value, column)
    if result.tzinfo is not None:
        try:
            result = result.astimezone(UTC).replace(tzinfo=None)
        except OverflowError as exc:
            raise InvalidValue(Reason.OUT_OF_RANGE) from exc
    return result


def _to_timestamptz(value: Any, column: Column) -> datetime:
    result = _parse_timestamp(value, column)
    return result if result.tzinfo is not None else result.replace(tzinfo=UTC)


def _to_date(value: Any, column: Column) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    text = _stripped(value)
    if len(text) != 10:
        raise InvalidValue(Reason.FORMAT)
    return _built(date.fromisoformat, text)


def _to_time(value: Any, column: Column) -> time:
    if isinstance(value, time):
        return value
    hour, minute, second, frac = _matched(value, _TIME_TEXT).groups()
    micros, carry = _fraction(frac, column.fraction_digits)
    result = _built(time, int(hour), int(minute), int(second or 0), micros)
    if carry:
        moved = datetime.combine(date(2000, 1, 1), result) + timedelta(seconds=1)
        if moved.day != 1:  # 23:59:59.9995 must not wrap to midnight: keep the largest time instead
            keep = max(0, min(column.fraction_digits, 6))
            return time(23, 59, 59, 999_999 - 999_999 % 10 ** (6 - keep))
        result = moved.time()
    return result


def _to_other(value: Any, column: Column) -> Any:
    if isinstance(value, str):
        return _checked_text(value, column)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, Decimal)):
        return _to_decimal_exact(value)
    if isinstance(value, float):
        raise InvalidValue(Reason.TYPE)
    return _checked_text(json_text(value), column)


_CONVERTERS = {
    Kind.TEXT: _to_text,
    Kind.JSON: _to_json,
    Kind.INTEGER: _to_integer,
    Kind.DECIMAL: _to_decimal,
    Kind.FLOAT: _to_float,
    Kind.BOOLEAN: _to_boolean,
    Kind.UUID: _to_uuid,
    Kind.TIMESTAMP: _to_timestamp,
    Kind.TIMESTAMPTZ: _to_timestamptz,
    Kind.DATE: _to_date,
    Kind.TIME: _to_time,
    Kind.OTHER: _to_other,
}
