"""The body parser: a value nested too deep for the parser becomes ``NaN`` (rejected per value), never
a 400 for the whole request; brackets inside strings are text."""

from __future__ import annotations

import json
import math

from powersync_upload.handler import lenient_json, shallow


def test_shallow_cuts_containers_at_the_limit_and_leaves_strings_alone() -> None:
    # Given a body with a deep array and brackets inside a string (escaped quote included)
    text = '{"a": "[[[\\"{{", "b": [[[[1]]]], "c": [2]}'
    # When it is cut at level 3
    cut = shallow(text, limit=3)
    # Then the deep array becomes NaN at level 3; the string and the shallow array are untouched
    assert cut == '{"a": "[[[\\"{{", "b": [NaN], "c": [2]}'


def test_a_body_nested_beyond_the_parser_parses_with_the_deep_value_as_nan() -> None:
    # Given a value nested 100,000 levels deep next to a plain one
    body = '{"x": ' + "[" * 100_000 + "]" * 100_000 + ', "y": 1}'
    # When it is parsed
    parsed = lenient_json(body)
    # Then the plain value is intact and the deep one ends in NaN, which conversion rejects per value
    assert parsed["y"] == 1
    inner = parsed["x"]
    while isinstance(inner, list):
        inner = inner[0]
    assert isinstance(inner, float) and math.isnan(inner)


def test_a_body_that_parses_is_not_touched() -> None:
    assert lenient_json(json.dumps({"x": [[["]]]"]]]})) == {"x": [[["]]]"]]]}


def test_shallow_reads_an_escaped_backslash_before_a_closing_quote() -> None:
    # Given a string ending in an escaped backslash, then a deep array after it
    text = '{"a": "x\\\\", "b": [[[1]]]}'
    # When it is cut at level 3 / Then the string closed at its quote and the array was cut
    assert shallow(text, limit=3) == '{"a": "x\\\\", "b": [NaN]}'
