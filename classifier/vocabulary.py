"""Generic keyword families shared by the keyword rules and the model's features.

One list, two uses: the keyword baseline picks the first family that matches, while
the model sees every matching family as a feature (kn:<family> for words of the name,
kw:<family> for words anywhere) and learns how much to trust each one. The words are
deliberately generic (no product or service names) so both degrade gracefully on
software neither has seen.
"""

from __future__ import annotations

# Ordered: the keyword baseline takes the first family that matches.
CATEGORY_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("certificate", ("cert", "certificate", "certificates", "ssl", "tls", "x509")),
    (
        "security",
        (
            "security",
            "auth",
            "authentication",
            "login",
            "unauthorized",
            "denied",
            "threat",
            "vulnerability",
            "cve",
            "secret",
            "brute",
            "intrusion",
            "malware",
        ),
    ),
    ("cost", ("cost", "spend", "budget", "billing", "bill")),
    ("disk", ("disk", "filesystem", "inode", "inodes", "volume", "storage", "space", "raid")),
    ("memory", ("memory", "oom", "heap", "swap")),
    ("cpu", ("cpu", "load", "throttling")),
    ("network", ("network", "interface", "packet", "packets", "bandwidth", "dns", "tcp", "conntrack")),
    ("database", ("database", "db", "sql", "query", "queries", "replication", "replica")),
    ("message_broker", ("queue", "broker", "consumer", "topic", "messages")),
    ("deployment", ("deploy", "deployment", "rollout", "release", "build", "pipeline")),
    ("config_drift", ("config", "configuration", "drift", "sync")),
    (
        "availability",
        (
            "down",
            "unavailable",
            "unreachable",
            "unhealthy",
            "crash",
            "missing",
            "absent",
            "restart",
            "offline",
            "disruptionbudget",
            "notready",
            "noleader",
        ),
    ),
    ("latency_errors", ("latency", "slow", "error", "errors", "fail", "failed", "timeout", "5xx", "errorbudget")),
)

URGENT_WORDS: tuple[str, ...] = ("critical", "down", "outage", "unavailable", "unreachable", "crash", "lost", "failed")
WARNING_WORDS: tuple[str, ...] = ("warning", "high", "slow", "low", "errors", "filling")
INFO_WORDS: tuple[str, ...] = ("info", "underutilized", "restarted", "changed")

# Words of impact (users or data are hurt now) and of degradation (something is
# drifting, may hurt later). Features only (kn:/kw:sev_impact, sev_degrade): the model
# learns how far to trust them; the keyword rules never page on a word alone.
IMPACT_WORDS: tuple[str, ...] = (
    "outage",
    "unavailable",
    "unreachable",
    "inoperable",
    "offline",
    "down",
    "lost",
    "loss",
    "corrupt",
    "corrupted",
    "damaged",
    "blocked",
    "full",
    "exhausted",
    "quorum",
    "leader",
    "halted",
    "dead",
    "crashloop",
    "readonly",
    "denied",
    "expired",
    "broken",
    "inaccessible",
    "stopped",
    "absent",
    "missing",
    "immediately",
)
DEGRADE_WORDS: tuple[str, ...] = (
    "high",
    "elevated",
    "slow",
    "growing",
    "increasing",
    "approaching",
    "near",
    "nearly",
    "predicted",
    "soon",
    "filling",
    "degraded",
    "risk",
    "imbalance",
    "imbalanced",
    "skew",
    "flapping",
    "churn",
    "may",
    "might",
    "expiring",
    "expire",
    "trend",
    "budget",
    "burn",
    "warning",
    "low",
    "fragmentation",
    "pending",
    "too",
)
