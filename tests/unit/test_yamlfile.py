from __future__ import annotations

import pytest

from streams.model.yamlfile import ConfigError, load_yaml, parse_duration_ms


@pytest.mark.parametrize(
    "text,ms",
    [
        ("30s", 30_000),
        ("15m", 900_000),
        ("4h", 14_400_000),
        ("7d", 604_800_000),
        ("1h30m", 5_400_000),
        ("250ms", 250),
        (5, 5_000),
        ("36500d", 36_500 * 86_400_000),
    ],
)
def test_durations(text, ms):
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("bad", ["", "15", "m", "15x", "1.5h", True])
def test_bad_durations_say_what_is_wrong(bad):
    with pytest.raises(ValueError):
        parse_duration_ms(bad)


@pytest.mark.parametrize(
    "bad,reason",
    [
        ("999999999999d", "longer than 100 years"),  # past an Avro long of epoch ms once added to a time
        ("36501d", "longer than 100 years"),
        (-5, "negative"),
        ("5\u00b2s", "not a duration"),  # '²' is a digit to str.isdigit(), not to int()
    ],
)
def test_durations_are_bounded_and_ascii(bad, reason):
    with pytest.raises(ValueError, match=reason):
        parse_duration_ms(bad)


def test_lines_are_remembered_and_duplicates_rejected(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("a: 1\nb:\n  c: 2\n")
    doc = load_yaml(path)
    assert doc.line_of("b") == 2 and doc["b"].line_of("c") == 3
    path.write_text("a: 1\na: 2\n")
    with pytest.raises(ConfigError, match=r"a.yaml:2: duplicate key 'a'"):
        load_yaml(path)
