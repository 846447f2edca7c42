"""The labelled corpus (catalogue rules + hand-labelled examples) and its split by service.

The split is by *service*: every event of one service lands on the same side, so the
test set measures how the model does on software it has never seen, which is what
production looks like. It is stratified by group (so every family of services is
represented on both sides) and decided by a salted hash, not by looking at scores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from classifier.dataset import Rule, rule_to_event
from classifier.examples import LabelledExample
from classifier.labels import category_for_rule, severity_for_rule
from classifier.sources import EXAMPLES_SOURCE, source_of_rule

SPLIT_SALT = "opsloop-split-v1"
TEST_FRACTION = 0.25
# Share of rules that also appear as a resolved notification, labelled "info":
# a resolve tells nobody to do anything, whatever the alert's own severity.
RESOLVED_SHARE = 0.15


@dataclass(frozen=True)
class Sample:
    """One labelled event and where it came from."""

    event: dict[str, Any]
    category: str
    severity: str
    group: str
    service: str
    origin: str  # "rule" or "example"
    ref: str  # rule index or example id
    # Who wrote it (the house style): the catalogue group of a rule, or "examples"
    # (classifier/sources.py). The leave-one-source-out evaluation holds out one at a time.
    source: str = EXAMPLES_SOURCE


def unit_hash(*parts: str) -> float:
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return int(digest[:12], 16) / float(1 << 48)


def rule_samples(rules: Iterable[Rule]) -> list[Sample]:
    """Each rule as a firing alert, plus a resolved copy for a fixed share of them."""
    out: list[Sample] = []
    for rule in rules:
        category = category_for_rule(rule)
        ref = str(rule.index)
        out.append(
            Sample(
                rule_to_event(rule),
                category,
                severity_for_rule(rule),
                rule.group,
                rule.service,
                "rule",
                ref,
                source_of_rule(rule),
            )
        )
        if unit_hash("resolved", ref) < RESOLVED_SHARE:
            resolved = rule_to_event(rule, status="resolved")
            out.append(
                Sample(resolved, category, "info", rule.group, rule.service, "rule", ref + "r", source_of_rule(rule))
            )
    return out


def example_samples(examples: Iterable[LabelledExample]) -> list[Sample]:
    """Hand-labelled examples as samples."""
    return [
        Sample(ex.event, ex.category, ex.severity, ex.group, ex.service, "example", ex.id, EXAMPLES_SOURCE)
        for ex in examples
    ]


def build_corpus(rules: Iterable[Rule], examples: Iterable[LabelledExample]) -> list[Sample]:
    """The whole labelled corpus, rules first, in a stable order."""
    return rule_samples(rules) + example_samples(examples)


def held_out_services(
    samples: Sequence[Sample], test_fraction: float = TEST_FRACTION, salt: str = SPLIT_SALT
) -> frozenset[str]:
    """The services held out for testing: about test_fraction of each group's services.

    A service's group is the group of its first sample, so a name shared by two
    families (a repository with both pull requests and deployments) still lands on
    one side only.
    """
    home: dict[str, str] = {}
    for s in samples:
        home.setdefault(s.service, s.group)
    by_group: dict[str, list[str]] = {}
    for service, group in home.items():
        by_group.setdefault(group, []).append(service)
    held: set[str] = set()
    for group, services in sorted(by_group.items()):
        if len(services) < 2:
            continue
        ranked = sorted(services, key=lambda svc: (unit_hash(salt, group, svc), svc))
        n_test = max(1, round(len(services) * test_fraction))
        held.update(ranked[:n_test])
    return frozenset(held)


def split_by_service(
    samples: Sequence[Sample], test_fraction: float = TEST_FRACTION, salt: str = SPLIT_SALT
) -> tuple[list[Sample], list[Sample]]:
    """(train, test) with no service on both sides."""
    held = held_out_services(samples, test_fraction, salt)
    train = [s for s in samples if s.service not in held]
    test = [s for s in samples if s.service in held]
    return train, test


def samples_sha256(samples: Iterable[Sample]) -> str:
    """A content hash of labelled samples: changes when an event, a label or the order changes."""
    h = hashlib.sha256()
    for s in samples:
        h.update(json.dumps([s.event, s.category, s.severity, s.service], sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()
