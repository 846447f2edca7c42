"""Labelling rules: how a catalogue rule gets its category and severity.

These rules produce the *ground truth* for training and evaluation. They may look at
the rule's group and service (a human labeller would), which the model never sees:
the model has to recover the same answer from the alert's words and metric names.
LABELLING.md explains each rule and why it sits where it does in the order.

A rule's category is the first of these that matches (all on the rule's *name*,
lower-cased, split into words):

1. cost words                                  -> cost
2. certificate words                           -> certificate
3. security words                              -> security
4. configuration / version-skew words          -> config_drift
5. disk / storage words                        -> disk
6. physical-hardware words (power, fans, heat) -> other
7. memory words                                -> memory
8. cpu words                                   -> cpu
9. network words                               -> network
10. the service's domain (DOMAIN_BY_GROUP, DOMAIN_BY_SERVICE) or domain words in
    the name (database, queue/broker words)    -> database / message_broker / disk /
                                                  network / certificate / security
11. deployment words                           -> deployment
12. availability words (down, missing, crash)  -> availability
13. latency and error words                    -> latency_errors
14. anything else                              -> other
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from classifier.dataset import Rule
from streams.errors import InvalidInputError
from streams.model.taxonomy import CATEGORIES, normalize_severity

_WORDS = re.compile(r"[a-z0-9]+")


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b")


# Name patterns, in precedence order. Each is matched against " ".join(words).
NAME_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("cost", _rx(r"costs?", r"spend(?:ing)?", r"budgets?", r"billing", r"invoices?")),
    (
        "certificate",
        _rx(
            r"certs?",
            r"certificates?",
            r"x509",
            r"ocsp",
            r"acme",
            r"(?:ssl|tls) (?:\w+ )?(?:expir\w*|revoked|handshake\w*|connection errors?)",
        ),
    ),
    (
        "security",
        _rx(
            r"auth",
            r"authentication",
            r"authori[sz]ation",
            r"unauthori[sz]ed",
            r"logins?",
            r"access denied",
            r"forbidden",
            r"threats?",
            r"security",
            r"sealed",
            r"tokens?",
            r"audit",
            r"denied",
            r"intrusions?",
            r"vulnerab\w*",
            r"cves?",
            r"malware",
            r"brute",
        ),
    ),
    (
        "config_drift",
        _rx(
            r"config",
            r"configs",
            r"configuration",
            r"overrides",
            r"drift\w*",
            r"versions? mismatch",
            r"version deviations?",
            r"different versions",
            r"(?:service|application|app) not synced",
        ),
    ),
    (
        "disk",
        _rx(
            r"disks?",
            r"filesystems?",
            r"inodes?",
            r"volumes?",
            r"raid",
            r"smart",
            r"sectors?",
            r"wearout",
            r"tablespace",
            r"spill",
            r"drives?",
            r"osd",
            r"hdfs",
            r"out of space",
            r"(?:low|free) (?:storage )?space",
            r"space (?:usage|low|critical)",
            r"(?:storage|pool|pools) (?:almost |near |nearly )?(?:full|filling|capacity|usage)",
            r"pool capacity",
            r"free capacity",
        ),
    ),
    (
        "other",  # physical hardware: power, cooling, sensors
        _rx(
            r"ups",
            r"battery",
            r"voltage",
            r"fans?",
            r"temperature",
            r"overtemperature",
            r"hot",
            r"cooling",
            r"sensors?",
            r"edac",
            r"power",
        ),
    ),
    (
        "memory",
        _rx(
            r"memory",
            r"mem",
            r"oom",
            r"heap",
            r"swap",
            r"rss",
            r"ram",
            r"maxmemory",
            r"gc",
            r"garbage",
            r"uncollectable",
            r"finalization",
            r"buffer pool",
        ),
    ),
    (
        "cpu",
        _rx(
            r"cpus?",
            r"vcpus?",
            r"vcores?",
            r"cores",
            r"iowait",
            r"steal",
            r"load average",
            r"cpu load",
            r"high load",
            r"context switch\w*",
            r"throttle rate",
        ),
    ),
    (
        "network",
        _rx(
            r"network\w*",
            r"interfaces?",
            r"bandwidth",
            r"packets?",
            r"throughput",
            r"bond",
            r"conntrack",
            r"nat",
            r"ipam",
            r"ips?",
            r"subnets?",
            r"dns",
            r"d n s",
            r"servfail",
            r"tcp",
            r"udp",
            r"traffic",
            r"handshake",
            r"internet",
            r"routers?",
            r"switch(?:es)? down",
            r"peers?",
            r"bgp",
            r"communication",
            r"unreachable nodes",
        ),
    ),
)

# Domain of whole groups / services: used after the symptom words above, so a
# database running out of disk is "disk" but a database that is down is "database".
DOMAIN_BY_GROUP: dict[str, str] = {
    "Databases": "database",
    "Message brokers": "message_broker",
    "Storage": "disk",
}
DOMAIN_BY_SERVICE: dict[str, str] = {
    "Cilium": "network",
    "CoreDNS": "network",
    "SNMP": "network",
    "Juniper": "network",
    "WireGuard": "network",
    "SpeedTest": "network",
    "SSL/TLS": "certificate",
    "cert-manager": "certificate",
    "Hashicorp Vault": "security",
    "Keycloak": "security",
}
DOMAIN_WORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("database", _rx(r"databases?", r"db", r"rds")),
    (
        "message_broker",
        _rx(
            r"sqs",
            r"brokers?",
            r"kafka",
            r"topics?",
            r"consumers?",
            r"dead letter",
            r"unack\w*",
            r"jetstream",
            r"messages?",
        ),
    ),
)

LATE_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "deployment",
        _rx(
            r"deploy\w*",
            r"rollouts?",
            r"rolled out",
            r"releases?",
            r"helmrelease",
            r"kustomization",
            r"builds?",
            r"pipelines?",
            r"replicas mismatch",
            r"generation mismatch",
            r"misscheduled",
            r"image",
            r"application sync\w*",
        ),
    ),
    (
        "availability",
        _rx(
            r"(?<!slowing )down",
            r"offline",
            r"unreachable",
            r"unavailable",
            r"unhealthy",
            r"not healthy",
            r"healthcheck",
            r"health check",
            r"not (?:running|ready|live|active|online|started|connected|ingesting|shipping|attached"
            r"|starting|processing|draining|converging)",
            r"has not \w+",
            r"not quorate",
            r"quorum",
            r"missing",
            r"absent",
            r"crash\w*",
            r"died",
            r"dead",
            r"killed",
            r"restart\w*",
            r"flapping",
            r"probe (?:http )?fail\w*",
            r"uptime",
            r"lost",
            r"halted",
            r"outage",
            r"empty",
            r"inactive",
            r"unit failed",
            r"no connection",
            r"has not run",
            r"never run",
            r"no (?:alive|healthy|live|available|active|node|nodes|leader|master|primary|raft leader"
            r"|successful|backends?|workers?|taskmanagers?|records|upload|rule evaluations|evaluation)",
        ),
    ),
    (
        "latency_errors",
        _rx(
            r"latenc\w*",
            r"slow\w*",
            r"response time",
            r"durations?",
            r"lag\w*",
            r"delay\w*",
            r"timeouts?",
            r"errors?",
            r"[45]xx",
            r"servfail",
            r"fail\w*",
            r"panic",
            r"reject\w*",
            r"refus\w*",
            r"drop\w*",
            r"backpressure\w*",
            r"backlog",
            r"pending",
            r"queued",
            r"retry",
            r"retries",
            r"stuck",
            r"exceptions?",
            r"throttl\w*",
            r"corrupt\w*",
            r"overflowing",
            r"circuit ?breaker",
            r"tripped",
            r"ejections",
            r"missed",
            r"queue\w*",
            r"backing up",
        ),
    ),
)

# Prometheus severities onto ours. Rule authors already decided how loud an alert is;
# we keep their decision rather than second-guess it, so "action" never comes from a
# catalogue rule (it comes from scans and reviews, see LABELLING.md).
RULE_SEVERITY: dict[str, str] = {"critical": "urgent", "warning": "warning", "info": "info"}


class LabellingError(InvalidInputError, ValueError):
    """A rule carries something the labelling rules have no answer for."""


def name_words(name: str) -> str:
    """The rule name as lower-case words joined by single spaces."""
    return " ".join(_WORDS.findall(name.lower()))


_CAMEL = (re.compile(r"([a-z0-9])([A-Z])"), re.compile(r"([A-Z]+)([A-Z][a-z])"), re.compile(r"([A-Za-z])([0-9])"))


def split_camel(name: str) -> str:
    """A Prometheus alertname as words: etcdHighFsyncDurations -> "etcd High Fsync Durations"."""
    for pattern in _CAMEL[::-1]:
        name = pattern.sub(r"\1 \2", name)
    return name


def category_for(name: str, group: str = "", service: str = "") -> str:
    """The category of an alert, from its name words and (if known) its group and service."""
    text = name_words(name)
    for category, pattern in NAME_RULES:
        if pattern.search(text):
            return category
    domain = DOMAIN_BY_SERVICE.get(service) or DOMAIN_BY_GROUP.get(group)
    if domain:
        return domain
    for category, pattern in DOMAIN_WORDS:
        if pattern.search(text):
            return category
    for category, pattern in LATE_RULES:
        if pattern.search(text):
            return category
    return "other"


def category_for_rule(rule: Rule) -> str:
    """The ground-truth category of a catalogue rule."""
    return category_for(rule.name, rule.group, rule.service)


def severity_for_rule(rule: Rule) -> str:
    """The ground-truth severity of a catalogue rule: the author's own, mapped onto ours."""
    try:
        return RULE_SEVERITY[rule.severity]
    except KeyError:
        mapped = normalize_severity(rule.severity)
        if mapped is None:
            raise LabellingError(f"rule {rule.name!r} has unknown severity {rule.severity!r}") from None
        return mapped


def check_categories(categories: Iterable[str]) -> None:
    """Fail loudly if a hand-written label is not in the taxonomy."""
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown:
        raise LabellingError(f"labels outside the taxonomy: {unknown}")
