"""Where the labelled data comes from, and what counts as one *source* (house style).

``classifier/data/sources/sources.yaml`` lists the vendored data: the
awesome-prometheus-alerts catalogue only (copied from the project's shared datasets
with its CC BY 4.0 licence). Other projects' rule sets cannot be vendored in this
workplace: data reaches the repository only through the project's shared datasets.

With one catalogue, the best proxy for house style is the catalogue's *group* (13
groups, e.g. "Databases", "Orchestrators", written by different contributors for
different exporters): :func:`source_of_rule` names a rule's source after its group,
and the hand-labelled examples are one more source (:data:`EXAMPLES_SOURCE`). The
leave-one-source-out evaluation holds out one of them at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from classifier.dataset import Rule

SOURCES_DIR = Path(__file__).resolve().parent / "data" / "sources"
MANIFEST = SOURCES_DIR / "sources.yaml"
CATALOGUE = "awesome-prometheus-alerts"
# Hand-labelled events (classifier/data/examples.yaml) count as one more source.
EXAMPLES_SOURCE = "examples"


@dataclass(frozen=True)
class Source:
    """One vendored data set: its folder name, files and licence."""

    name: str
    files: tuple[Path, ...]
    licence: str
    format: str


def load_manifest(path: Path = MANIFEST) -> list[Source]:
    """Every data set listed in sources.yaml, in order."""
    doc = yaml.safe_load(path.read_text())
    return [
        Source(
            name=entry["name"],
            files=tuple(path.parent / entry["name"] / f for f in entry["files"]),
            licence=str(entry.get("licence") or ""),
            format=entry.get("format", "awesome"),
        )
        for entry in doc["sources"]
    ]


def source_of_rule(rule: Rule) -> str:
    """A catalogue rule's source for the leave-one-source-out evaluation: its group."""
    return rule.group
