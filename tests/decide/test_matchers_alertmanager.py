"""Regex matchers read as Alertmanager reads them, asked of Alertmanager's own ``amtool``.

Alertmanager compiles matchers with Go's RE2 and opsloop with Python's re, and the two read
some patterns differently: POSIX classes (``[[:alpha:]]``), ``\\d \\w \\s \\b`` (ASCII in RE2,
Unicode in Python), ``\\z``. A silence or route written for Alertmanager must select the same
alerts here. ``amtool config routes test`` (Debian's prometheus-alertmanager, installed by
deploy/dev/bootstrap.sh) says which receivers a label set reaches: one route per pattern, each
with ``continue``, so one call answers every pattern for one value.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from streams.model.matchers import MatcherError, make_matcher, parse_matcher

PATTERNS = [
    "[[:alpha:]]+",
    "[[:^digit:]]+",
    "[^[:space:][:punct:]]+",
    "[[:xdigit:]]+",
    r"\d+",
    r"\w+",
    r"\S+",
    r"\s",
    r"[\d_]+",
    r"[\D]+",
    r"[^\W]+",
    r"a\b.*",
    r".*\Bb.*",
    r"db\z",
    "(?i)ÄBC",
    "[]a]+",
    "db|cache",
    "db-[0-9]{1,3}",
]
VALUES = ["db", "db1", "a]", "db-01", "12", "١٢", "é", "äbc", "ÄBC", " ", "_", "a b", "ab", "ba", "ff0A", "cache"]


@pytest.fixture(scope="module")
def amtool() -> str:
    path = shutil.which("amtool")
    assert path, "amtool not found: deploy/dev/bootstrap.sh installs Debian's prometheus-alertmanager"
    return path


# Matchers as users write them in Alertmanager's YAML: its unescaping keeps a backslash that
# escapes nothing (``\d``), reads ``\n``, ``\"`` and ``\\`` (opsloop read ``"\d+"`` as ``d+``).
WRITTEN = [
    r'service=~"\d+"',
    r'service=~"db\.prod|\w+"',
    r'service="a\\b"',
    r'service="say \"hi\""',
    r"service=~\d+",
    r'service!~"[[:digit:]]+"',
    r'service=~"x\ty"',
    r'service="x\ty"',
    r'service="x\\y"',
    r'service = "é"',
]
WRITTEN_VALUES = ["12", "dd", "db.prod", "dbxprod", "a\\b", "ab", 'say "hi"', "x\\ty", "x\ty", "x\\y", "é", ""]


def reached(amtool: str, path, value: str) -> set[int]:
    """Which routes ``p<i>`` a label set ``service=value`` reaches, by Alertmanager's own reading."""
    quoted = value.replace("\\", "\\\\").replace('"', '\\"')
    answer = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={path}", f'service="{quoted}"'],
        capture_output=True,
        text=True,
        check=True,
    )
    return {int(r[1:]) for r in answer.stdout.strip().splitlines()[-1].split(",") if r != "none"}


def config_of(texts: list[str]) -> dict:
    return {
        "route": {
            "receiver": "none",
            "routes": [{"receiver": f"p{i}", "matchers": [text], "continue": True} for i, text in enumerate(texts)],
        },
        "receivers": [{"name": "none"}] + [{"name": f"p{i}"} for i in range(len(texts))],
    }


def test_matchers_as_written_in_alertmanager_yaml_read_the_same(amtool, tmp_path):
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config_of(WRITTEN), allow_unicode=True))
    matchers = [parse_matcher(text) for text in WRITTEN]
    differences = []
    for value in WRITTEN_VALUES:
        ours = {i for i, m in enumerate(matchers) if m.matches({"service": value})}
        differences += [(WRITTEN[i], value) for i in sorted(reached(amtool, path, value) ^ ours)]
    assert differences == [], "(matcher, value) where opsloop and Alertmanager disagree"


def test_regex_matchers_select_what_alertmanager_selects(amtool, tmp_path):
    matchers = [make_matcher("service", "=~", pattern) for pattern in PATTERNS]
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config_of([str(m) for m in matchers]), allow_unicode=True))
    differences = []
    for value in VALUES:
        ours = {i for i, m in enumerate(matchers) if m.matches({"service": value})}
        differences += [(PATTERNS[i], value) for i in sorted(reached(amtool, path, value) ^ ours)]
    assert differences == [], "(pattern, value) where opsloop and Alertmanager disagree"
    assert len({tuple(m.matches({"service": v}) for m in matchers) for v in VALUES}) > 5  # the values tell apart


NAMES = ["a:b", ":x", "_y", "job", "A9", "1a", "a-b", "a.b", "é"]


def test_label_names_are_taken_and_refused_as_alertmanager_does(amtool, tmp_path):
    """A label name in a matcher: what Alertmanager's config check takes, opsloop takes, and the other way."""
    differences = []
    for name in NAMES:
        path = tmp_path / "alertmanager.yml"
        path.write_text(yaml.safe_dump(config_of([f'{name}="x"']), allow_unicode=True))
        theirs = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True).returncode == 0
        try:
            ours = parse_matcher(f'{name}="x"').matches({name: "x"})
        except MatcherError:
            ours = False
        if theirs != ours:
            differences.append((name, theirs, ours))
    assert differences == [], "(name, Alertmanager takes it, opsloop takes it)"
    assert parse_matcher('a:b!="x"').matches({"a:b": "y"})
