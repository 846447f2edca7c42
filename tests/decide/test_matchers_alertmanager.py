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

from streams.model.matchers import make_matcher

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


def test_regex_matchers_select_what_alertmanager_selects(amtool, tmp_path):
    matchers = [make_matcher("service", "=~", pattern) for pattern in PATTERNS]
    config = {
        "route": {
            "receiver": "none",
            "routes": [{"receiver": f"p{i}", "matchers": [str(m)], "continue": True} for i, m in enumerate(matchers)],
        },
        "receivers": [{"name": "none"}] + [{"name": f"p{i}"} for i in range(len(matchers))],
    }
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    differences = []
    for value in VALUES:
        quoted = value.replace("\\", "\\\\").replace('"', '\\"')
        answer = subprocess.run(
            [amtool, "config", "routes", "test", f"--config.file={path}", f'service="{quoted}"'],
            capture_output=True,
            text=True,
            check=True,
        )
        reached = answer.stdout.strip().splitlines()[-1].split(",")
        alertmanager = {int(r[1:]) for r in reached if r != "none"}
        ours = {i for i, m in enumerate(matchers) if m.matches({"service": value})}
        differences += [(PATTERNS[i], value, i in alertmanager) for i in sorted(alertmanager ^ ours)]
    assert differences == [], "(pattern, value, Alertmanager's answer) where opsloop answers otherwise"
    assert len({tuple(m.matches({"service": v}) for m in matchers) for v in VALUES}) > 5  # the values tell apart
