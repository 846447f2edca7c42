"""Runbooks as code: what to do for which events, under which policy.

A runbook file (``runbooks/<name>.yaml``) says which events it takes (``match`` on
category, severity, event type and kind, and label matchers; or a ``trigger``
condition on metric samples), its ``policy`` (cooldown, dedupe window, consecutive
message cap and what resets it, flapping, from which severity the escalation chain
runs), its ``steps`` (notify a receiver or the routing tree, remediate through an
HTTP action, verify after a delay) and an ``escalation`` chain.

:func:`load_runbook_set` reads a whole directory: every runbook, ``routing.yaml``,
``maintenance.yaml`` and ``schedules.yaml``. Everything is validated at load and
the first error is a :class:`~streams.model.yamlfile.ConfigError` naming the file, the
line and the reason; a worker refuses to start on a broken set. The set carries a
version (a hash of the files' bytes) that each decision record names, so replay can
tell which rules decided.
"""

from __future__ import annotations

import fnmatch
import hashlib
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.model.digest_config import DIGEST_FILE, DigestConfig, load_digest_config
from streams.model.matchers import Matcher
from streams.model.receivers import ChannelSpec, notify_refusal
from streams.model.routing import (
    Routing,
    default_routing,
    load_routing,
    parse_matcher_list,
)
from streams.model.silences import Silence, load_maintenance
from streams.model.taxonomy import SEVERITIES
from streams.model.yamlfile import ConfigError, LineDict, check_keys, load_yaml, parse_duration_ms, suggest

ROUTING_FILE = "routing.yaml"
MAINTENANCE_FILE = "maintenance.yaml"
SCHEDULES_FILE = "schedules.yaml"
# Owned by ingest (session-key rules); not a runbook.
RESERVED_FILES = (ROUTING_FILE, MAINTENANCE_FILE, SCHEDULES_FILE, DIGEST_FILE, "sessions.yaml", "ingest-scopes.yaml")

ROUTE_RECEIVER = "route"  # a notify step / escalation step that asks the routing tree

RUNBOOK_FIELDS = (
    "name",
    "description",
    "priority",
    "url",
    "severity",
    "match",
    "trigger",
    "policy",
    "steps",
    "escalation",
)
MATCH_FIELDS = ("category", "severity", "type", "kind", "labels")
POLICY_FIELDS = ("cooldown", "dedupe_window", "max_consecutive", "reset_on", "flapping", "escalate_from")
FLAPPING_FIELDS = ("flips", "window", "stable_for")
TRIGGER_FIELDS = ("metric", "operator", "threshold", "for", "severity", "labels")
REMEDIATE_FIELDS = ("action", "endpoint", "method", "params", "dry_run", "requires_approval", "retries", "timeout")
# What a runbook's remediate step may say about its outcome (a schedule's dispatch may not: it has no runbook).
OUTCOME_FIELDS = ("on_failure", "then", "continue_on_failure")
ON_FAILURE_FIELDS = ("escalate", "notify", "next")
RESETS = ("ack", "resolve", "human")
KINDS = ("telemetry", "webhook", "timer", "scan")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
OPERATOR_ALIASES = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "==", "ne": "!="}


@dataclass(frozen=True)
class Flapping:
    """``flips`` status changes within ``window`` mean flapping; quiet until ``stable_for`` passes without one."""

    flips: int = 4
    window: int = 600_000
    stable_for: int = 600_000

    @property
    def enabled(self) -> bool:
        return self.flips > 0


# Flapping is opt-in per runbook (``policy.flapping``): without it a session never counts as flapping.
NO_FLAPPING = Flapping(flips=0)


@dataclass(frozen=True)
class Policy:
    cooldown: int = 0
    dedupe_window: int = 600_000
    max_consecutive: int = 3
    reset_on: tuple[str, ...] = RESETS
    flapping: Flapping = NO_FLAPPING
    escalate_from: str = "urgent"


@dataclass(frozen=True)
class Notify:
    receiver: str = ROUTE_RECEIVER


@dataclass(frozen=True)
class OnFailure:
    """What a failed remediation (failed, dead-lettered, timed out) does: exactly one of the three."""

    escalate: bool = False  # the escalation chain's next step now (or its receivers, without a chain)
    notify: str = ""  # a receiver (or ``route``)
    next: str = ""  # another remediate step of the runbook, by action


@dataclass(frozen=True)
class Remediate:
    action: str
    endpoint: str = ""
    method: str = "POST"
    params: Mapping[str, str] = field(default_factory=dict)
    dry_run: bool = True
    requires_approval: bool = False
    retries: int = -1  # retries after the first call (-1: the sink's OPSLOOP_SINK_MAX_ATTEMPTS)
    timeout: int = 0  # ms per call (0: the sink's read timeout)
    on_failure: OnFailure | None = None
    then: str = ""  # the action to run once this one succeeded (a chain)
    continue_on_failure: bool = False  # run ``then`` after a failure too


@dataclass(frozen=True)
class Verify:
    after: int


Step = Notify | Remediate | Verify


@dataclass(frozen=True)
class EscalationStep:
    after: int
    receiver: str


@dataclass(frozen=True)
class Trigger:
    """A condition on metric samples: ``metric operator threshold`` holding for ``for_``."""

    metric: str
    operator: str
    threshold: float
    for_: int = 0
    severity: str = "warning"
    labels: tuple[Matcher, ...] = ()

    def holds(self, value: float) -> bool:
        return OPERATORS[self.operator](value, self.threshold)


@dataclass(frozen=True)
class Match:
    categories: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    labels: tuple[Matcher, ...] = ()


@dataclass(frozen=True)
class Runbook:
    name: str
    match: Match = field(default_factory=Match)
    policy: Policy = field(default_factory=Policy)
    steps: tuple[Step, ...] = (Notify(),)
    escalation: tuple[EscalationStep, ...] = ()
    trigger: Trigger | None = None
    priority: int = 0
    description: str = ""
    url: str = ""
    # The severity of the events this runbook takes when their sender did not state one
    # (the seed documents' type -> info | warning | action | urgent); "" keeps the classifier's.
    severity: str = ""
    path: str = ""
    line: int = 0

    @property
    def notify_receivers(self) -> tuple[str, ...]:
        return tuple(s.receiver for s in self.steps if isinstance(s, Notify))

    @property
    def remediations(self) -> tuple[Remediate, ...]:
        return tuple(s for s in self.steps if isinstance(s, Remediate))

    @property
    def follow_ups(self) -> frozenset[str]:
        """Actions that run only after another one's outcome (``then``, ``on_failure.next``), not with
        the first message."""
        named = {r.then for r in self.remediations} | {
            r.on_failure.next for r in self.remediations if r.on_failure is not None
        }
        return frozenset(named - {""})

    def remediation(self, action: str) -> tuple[int, Remediate] | None:
        """The remediate step of ``action`` (action names are unique in a runbook) and its index."""
        for index, step in enumerate(self.remediations):
            if step.action == action:
                return index, step
        return None

    @property
    def verify(self) -> Verify | None:
        return next((s for s in self.steps if isinstance(s, Verify)), None)

    @property
    def only_dry_runs(self) -> bool:
        """Every remediation it runs is a dry run (none: False): nothing it did can have changed what fires."""
        return bool(self.remediations) and all(step.dry_run for step in self.remediations)

    def escalates(self, severity: str) -> bool:
        return bool(self.escalation) and SEVERITIES.index(severity) >= SEVERITIES.index(self.policy.escalate_from)


DEFAULT_RUNBOOK = Runbook(
    name="default", description="Anything no runbook claims: notify through the routing tree.", priority=-1_000_000
)


@dataclass(frozen=True)
class Schedule:
    """A cron schedule (scan dispatch, reminders); see :mod:`streams.core.timers` for the slot logic."""

    name: str
    cron: str
    timezone: str = "UTC"
    catch_up: int = 3_600_000
    max_runtime: int = 3_600_000
    stagger: int = 0
    targets: tuple[str, ...] = ("",)
    remediate: Remediate | None = None
    notify_receiver: str = ""
    title: str = ""
    org: str = "default"
    line: int = 0
    # A disabled schedule is loaded and validated but never dispatched by the scheduler
    # (the starter set ships its scans disabled: they name a placeholder scanner).
    enabled: bool = True

    @property
    def session_key(self) -> str:
        return f"{self.org}:schedule:{self.name}"


SELECT_CACHE_MAX = 50_000  # label sets remembered by RunbookSet.select (then it starts over)


@dataclass(frozen=True)
class RunbookSet:
    runbooks: tuple[Runbook, ...]
    routing: Routing
    maintenance: tuple[Silence, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    digest: DigestConfig = DigestConfig()  # runbooks/digest.yaml: who gets a daily digest, when
    version: str = "builtin-0"
    directory: str = ""
    by_name: Mapping[str, Runbook] = field(init=False, repr=False, compare=False)
    # select()'s answers by its arguments: the set is immutable, so an answer never goes stale
    _selected: dict[tuple[Any, ...], Runbook] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {rb.name: rb for rb in self.runbooks})
        object.__setattr__(self, "_selected", {})

    def get(self, name: str) -> Runbook:
        return self.by_name.get(name, DEFAULT_RUNBOOK)

    def select(self, labels: Mapping[str, str], *, category: str, severity: str, event_type: str, kind: str) -> Runbook:
        """The first runbook (by priority, then file name) whose match takes the event.

        Memoised per label set (and the other arguments): events of one alert repeat the
        same labels, and the scan matches each runbook's regular expressions.
        """
        key = (tuple(labels.items()), category, severity, event_type, kind)
        chosen = self._selected.get(key)
        if chosen is None:
            chosen = DEFAULT_RUNBOOK
            for rb in self.runbooks:
                if rb.trigger is None and runbook_matches(rb.match, labels, category, severity, event_type, kind):
                    chosen = rb
                    break
            if len(self._selected) >= SELECT_CACHE_MAX:
                self._selected.clear()
            self._selected[key] = chosen
        return chosen

    def naming(
        self, labels: Mapping[str, str], *, category: str, severity: str, event_type: str, kind: str
    ) -> Runbook | None:
        """The first runbook that takes the event *and names its type* (``match.type``), or None.

        What makes an event type one opsloop knows when decide has no built-in meaning for
        it (see :mod:`streams.core.fates`); the catch-all ``default`` runbook names no type.
        """
        for rb in self.runbooks:
            if (
                rb.trigger is None
                and rb.match.types
                and runbook_matches(rb.match, labels, category, severity, event_type, kind)
            ):
                return rb
        return None

    def triggers_for(self, metric: str, labels: Mapping[str, str]) -> list[Runbook]:
        from streams.model.matchers import matches_all

        return [
            rb
            for rb in self.runbooks
            if rb.trigger
            and rb.trigger.metric == metric
            and matches_all(rb.trigger.labels, labels)
            and matches_all(rb.match.labels, labels)
        ]


def runbook_matches(
    m: Match, labels: Mapping[str, str], category: str, severity: str, event_type: str, kind: str
) -> bool:
    from streams.model.matchers import matches_all

    if m.categories and category not in m.categories:
        return False
    if m.severities and severity not in m.severities:
        return False
    if m.kinds and kind not in m.kinds:
        return False
    if m.types and not any(fnmatch.fnmatchcase(event_type, t) for t in m.types):
        return False
    return matches_all(m.labels, labels)


def builtin_set() -> RunbookSet:
    return RunbookSet(runbooks=(), routing=default_routing(), version="builtin-0")


# -- loading ---------------------------------------------------------------------


def load_runbook_set(directory: str | Path, *, channels: Mapping[str, ChannelSpec]) -> RunbookSet:
    """Load and validate every file of a runbook directory (ConfigError file:line on the first error).

    ``channels``: the channels routing.yaml's receivers may name (``agents.sinks.channels.specs()``).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(directory, None, "runbook directory does not exist")
    digest = hashlib.sha256()
    files = sorted(p for p in directory.glob("*.yaml") if p.is_file())
    for p in sorted(directory.glob("*.yml")):
        raise ConfigError(p, None, "use the .yaml extension (files ending in .yml are not loaded)")
    for p in files:
        digest.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    routing_path = directory / ROUTING_FILE
    routing = load_routing(routing_path, channels=channels) if routing_path.exists() else default_routing()
    maintenance = load_maintenance(directory / MAINTENANCE_FILE) if (directory / MAINTENANCE_FILE).exists() else ()
    runbooks = []
    names: dict[str, str] = {}
    for p in files:
        if p.name in RESERVED_FILES:
            continue
        rb = load_runbook(p, routing)
        if rb.name in names:
            raise ConfigError(p, rb.line, f"runbook name {rb.name!r} is already used by {names[rb.name]}")
        names[rb.name] = p.name
        runbooks.append(rb)
    runbooks.sort(key=lambda rb: (-rb.priority, Path(rb.path).name))
    schedules = load_schedules(directory / SCHEDULES_FILE, routing) if (directory / SCHEDULES_FILE).exists() else ()
    digests = load_digest_config(directory / DIGEST_FILE) if (directory / DIGEST_FILE).exists() else DigestConfig()
    return RunbookSet(
        runbooks=tuple(runbooks),
        routing=routing,
        maintenance=maintenance,
        schedules=schedules,
        digest=digests,
        version=digest.hexdigest()[:16],
        directory=str(directory),
    )


def _strings(
    path: Path, mapping: LineDict, key: str, what: str, allowed: tuple[str, ...] | None = None
) -> tuple[str, ...]:
    value = mapping.get(key)
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(path, mapping.line_of(key), f"{what}: {key} must be a string or a list of strings")
    if allowed is not None:
        for item in items:
            if item not in allowed:
                raise ConfigError(
                    path,
                    mapping.line_of(key),
                    f"{what}: {key}: unknown value {item!r}{suggest(item, allowed)}; expected one of {', '.join(allowed)}",
                )
    return tuple(items)


def _duration(path: Path, mapping: LineDict, key: str, what: str, default: int) -> int:
    if key not in mapping:
        return default
    try:
        return parse_duration_ms(mapping[key])
    except ValueError as exc:
        raise ConfigError(path, mapping.line_of(key), f"{what}: {key}: {exc}") from None


def _int(path: Path, mapping: LineDict, key: str, what: str, default: int, minimum: int) -> int:
    value = mapping.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(path, mapping.line_of(key), f"{what}: {key} must be an integer >= {minimum}, got {value!r}")
    return value


def _mapping(path: Path, mapping: LineDict, key: str, what: str) -> LineDict | None:
    value = mapping.get(key)
    if value is None:
        return None
    if not isinstance(value, LineDict):
        raise ConfigError(path, mapping.line_of(key), f"{what}: {key} must be a mapping")
    return value


def _check_receiver(path: Path, line: int, what: str, receiver: Any, routing: Routing) -> str:
    if not isinstance(receiver, str) or not receiver:
        raise ConfigError(path, line, f"{what}: receiver must be a receiver name or {ROUTE_RECEIVER!r}")
    if receiver != ROUTE_RECEIVER and receiver not in routing.receivers:
        choices = [*routing.receivers, ROUTE_RECEIVER]
        raise ConfigError(
            path,
            line,
            f"{what}: unknown receiver {receiver!r}{suggest(receiver, choices)} "
            f"(receivers are declared in {ROUTING_FILE})",
        )
    refusal = notify_refusal(routing.receivers[receiver]) if receiver != ROUTE_RECEIVER else None
    if refusal:
        raise ConfigError(path, line, f"{what}: {refusal}")
    return receiver


def load_runbook(path: str | Path, routing: Routing) -> Runbook:
    path = Path(path)
    doc = load_yaml(path)
    if not isinstance(doc, LineDict):
        raise ConfigError(path, 1, "a runbook file holds one mapping (name, match, policy, steps, escalation)")
    check_keys(path, doc, RUNBOOK_FIELDS, "runbook")
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(path, doc.line_of("name") if "name" in doc else doc.line, "runbook: name is required")
    what = f"runbook {name!r}"
    priority = doc.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigError(path, doc.line_of("priority"), f"{what}: priority must be an integer")
    match = _match(path, doc, what)
    trigger = _trigger(path, doc, what)
    policy = _policy(path, doc, what)
    steps = _steps(path, doc, what, routing)
    escalation = _escalation(path, doc, what, routing)
    if escalation and escalation[0].after != 0:
        raise ConfigError(
            path,
            doc.line_of("escalation"),
            f"{what}: the first escalation step is the first notification: after must be 0m",
        )
    severity = doc.get("severity", "")
    if severity and severity not in SEVERITIES:
        raise ConfigError(path, doc.line_of("severity"), f"{what}: severity must be one of {', '.join(SEVERITIES)}")
    url = doc.get("url", "")
    if url and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        raise ConfigError(path, doc.line_of("url"), f"{what}: url must be an http(s) link")
    return Runbook(
        name=name,
        match=match,
        policy=policy,
        steps=steps,
        escalation=escalation,
        trigger=trigger,
        priority=priority,
        description=str(doc.get("description", "")),
        url=url or "",
        severity=severity or "",
        path=str(path),
        line=doc.line,
    )


def _match(path: Path, doc: LineDict, what: str) -> Match:
    raw = _mapping(path, doc, "match", what)
    if raw is None:
        return Match()
    from streams.model.taxonomy import CATEGORIES

    check_keys(path, raw, MATCH_FIELDS, f"{what}: match")
    return Match(
        categories=_strings(path, raw, "category", f"{what}: match", CATEGORIES),
        severities=_strings(path, raw, "severity", f"{what}: match", SEVERITIES),
        types=_strings(path, raw, "type", f"{what}: match"),
        kinds=_strings(path, raw, "kind", f"{what}: match", KINDS),
        labels=parse_matcher_list(path, raw, "labels", f"{what}: match"),
    )


def _trigger(path: Path, doc: LineDict, what: str) -> Trigger | None:
    raw = _mapping(path, doc, "trigger", what)
    if raw is None:
        return None
    w = f"{what}: trigger"
    check_keys(path, raw, TRIGGER_FIELDS, w)
    metric = raw.get("metric")
    if not isinstance(metric, str) or not metric:
        raise ConfigError(path, raw.line, f"{w}: metric is required")
    op = raw.get("operator", ">")
    op = OPERATOR_ALIASES.get(op, op) if isinstance(op, str) else op
    if not isinstance(op, str) or op not in OPERATORS:
        raise ConfigError(
            path,
            raw.line_of("operator"),
            f"{w}: operator must be one of {', '.join(OPERATORS)} (or gt, gte, lt, lte, eq, ne)",
        )
    threshold = raw.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ConfigError(
            path, raw.line_of("threshold") if "threshold" in raw else raw.line, f"{w}: threshold must be a number"
        )
    severity = raw.get("severity", "warning")
    if severity not in SEVERITIES:
        raise ConfigError(path, raw.line_of("severity"), f"{w}: severity must be one of {', '.join(SEVERITIES)}")
    return Trigger(
        metric=metric,
        operator=op,
        threshold=float(threshold),
        for_=_duration(path, raw, "for", w, 0),
        severity=severity,
        labels=parse_matcher_list(path, raw, "labels", w),
    )


def _policy(path: Path, doc: LineDict, what: str) -> Policy:
    raw = _mapping(path, doc, "policy", what)
    if raw is None:
        return Policy()
    w = f"{what}: policy"
    check_keys(path, raw, POLICY_FIELDS, w)
    d = Policy()
    flapping = d.flapping
    fraw = _mapping(path, raw, "flapping", w)
    if fraw is not None:  # given (even as {}): on, with 4 flips in 10m unless it says otherwise
        flapping = Flapping()
        check_keys(path, fraw, FLAPPING_FIELDS, f"{w}: flapping")
        window = _duration(path, fraw, "window", f"{w}: flapping", flapping.window)
        flapping = Flapping(
            flips=_int(path, fraw, "flips", f"{w}: flapping", flapping.flips, 2),
            window=window,
            stable_for=_duration(path, fraw, "stable_for", f"{w}: flapping", window),
        )
    escalate_from = raw.get("escalate_from", d.escalate_from)
    if escalate_from not in SEVERITIES:
        raise ConfigError(
            path, raw.line_of("escalate_from"), f"{w}: escalate_from must be one of {', '.join(SEVERITIES)}"
        )
    return Policy(
        cooldown=_duration(path, raw, "cooldown", w, d.cooldown),
        dedupe_window=_duration(path, raw, "dedupe_window", w, d.dedupe_window),
        max_consecutive=_int(path, raw, "max_consecutive", w, d.max_consecutive, 1),
        reset_on=_strings(path, raw, "reset_on", w, RESETS) if "reset_on" in raw else d.reset_on,
        flapping=flapping,
        escalate_from=escalate_from,
    )


# ``{labels.instance}`` in a remediate step's params: the value of that label of the alert the step acts on
# (the session's lead firing alert), so the remediator learns its target (which node, which volume).
PARAM_PLACEHOLDER = re.compile(r"\{labels\.([A-Za-z_][A-Za-z0-9_]*)\}")


def param_template_error(value: str) -> str:
    """Why ``value`` is not a params template (a brace that is not ``{labels.<name>}``), or ""."""
    rest = PARAM_PLACEHOLDER.sub("", value)
    if "{" in rest or "}" in rest:
        return f"{value[:80]!r}: a placeholder is {{labels.<name>}} (a label of the alert the step acts on)"
    return ""


def fill_params(params: Mapping[str, str], labels: Mapping[str, str]) -> dict[str, str]:
    """``params`` with each ``{labels.<name>}`` replaced by that label's value; a templated param that comes
    out empty (the alert has none of its labels) is left out rather than sent as ""."""
    out = {}
    for key, value in params.items():
        filled = PARAM_PLACEHOLDER.sub(lambda m: str(labels.get(m.group(1), "")), value)
        if filled or filled == value:
            out[key] = filled
    return out


def _remediate(path: Path, raw: Any, line: int, what: str, routing: Routing | None = None) -> Remediate:
    """A remediate step; ``routing`` given (a runbook's step): its outcome keys are allowed too."""
    if not isinstance(raw, LineDict):
        raise ConfigError(path, line, f"{what}: remediate must be a mapping with action, endpoint, ...")
    check_keys(path, raw, REMEDIATE_FIELDS + (OUTCOME_FIELDS if routing is not None else ()), f"{what}: remediate")
    action = raw.get("action")
    if not isinstance(action, str) or not action:
        raise ConfigError(path, raw.line, f"{what}: remediate.action is required")
    endpoint = raw.get("endpoint", "")
    if endpoint and not (isinstance(endpoint, str) and endpoint.startswith(("http://", "https://"))):
        raise ConfigError(path, raw.line_of("endpoint"), f"{what}: remediate.endpoint must be an http(s) URL")
    method = str(raw.get("method", "POST")).upper()
    if method not in HTTP_METHODS:
        raise ConfigError(
            path, raw.line_of("method"), f"{what}: remediate.method must be one of {', '.join(HTTP_METHODS)}"
        )
    params = raw.get("params") or {}
    if not isinstance(params, dict) or not all(isinstance(v, (str, int, float, bool)) for v in params.values()):
        raise ConfigError(path, raw.line_of("params"), f"{what}: remediate.params must map names to scalar values")
    for key, value in params.items():
        bad = param_template_error(str(value))
        if bad:
            raise ConfigError(path, raw.line_of("params"), f"{what}: remediate.params.{key}: {bad}")
    for key in ("dry_run", "requires_approval", "continue_on_failure"):
        if key in raw and not isinstance(raw[key], bool):
            raise ConfigError(path, raw.line_of(key), f"{what}: remediate.{key} must be true or false")
    retries = _int(path, raw, "retries", f"{what}: remediate", -1, 0) if "retries" in raw else -1
    timeout = _duration(path, raw, "timeout", f"{what}: remediate", 0)
    if "timeout" in raw and timeout <= 0:
        raise ConfigError(path, raw.line_of("timeout"), f"{what}: remediate.timeout must be positive")
    then = raw.get("then", "")
    if "then" in raw and (not isinstance(then, str) or not then):
        raise ConfigError(path, raw.line_of("then"), f"{what}: remediate.then must name another remediate action")
    on_failure = None
    if "on_failure" in raw:
        assert routing is not None  # OUTCOME_FIELDS are checked only with a routing
        on_failure = _on_failure(path, raw, f"{what}: remediate.on_failure", routing)
    return Remediate(
        action=action,
        endpoint=endpoint or "",
        method=method,
        params={str(k): str(v) for k, v in sorted(params.items())},
        dry_run=raw.get("dry_run", True),
        requires_approval=raw.get("requires_approval", False),
        retries=retries,
        timeout=timeout,
        on_failure=on_failure,
        then=then,
        continue_on_failure=raw.get("continue_on_failure", False),
    )


def _on_failure(path: Path, raw: LineDict, what: str, routing: Routing) -> OnFailure:
    body = raw["on_failure"]
    line = raw.line_of("on_failure")
    if not isinstance(body, LineDict) or len(body) != 1:
        raise ConfigError(
            path, line, f"{what}: expected one of {{escalate: true}}, {{notify: <receiver>}}, {{next: <action>}}"
        )
    check_keys(path, body, ON_FAILURE_FIELDS, what)
    ((key, value),) = body.items()
    line = body.line_of(key)
    if key == "escalate":
        if value is not True:
            raise ConfigError(path, line, f"{what}: escalate must be true")
        return OnFailure(escalate=True)
    if key == "notify":
        receiver = value.get("receiver") if isinstance(value, LineDict) else value
        return OnFailure(notify=_check_receiver(path, line, f"{what}: notify", receiver, routing))
    if not isinstance(value, str) or not value:
        raise ConfigError(path, line, f"{what}: next must name another remediate action of the runbook")
    return OnFailure(next=value)


def _check_chains(path: Path, doc: LineDict, what: str, steps: tuple[Step, ...]) -> None:
    """Action names unique; ``then`` / ``on_failure.next`` name another step's action; no loops."""
    raw = doc.get("steps") or []
    remediations: dict[str, Remediate] = {}
    lines: dict[str, int] = {}
    for item, step in zip(raw, steps, strict=True):
        if not isinstance(step, Remediate):
            continue
        line = item.line_of("remediate")
        if step.action in remediations:
            raise ConfigError(path, line, f"{what}: remediate action {step.action!r} appears twice (names are unique)")
        remediations[step.action], lines[step.action] = step, line
    for action, step in remediations.items():
        for key, target in (("then", step.then), ("on_failure.next", step.on_failure.next if step.on_failure else "")):
            if not target:
                continue
            if target == action or target not in remediations:
                known = [a for a in remediations if a != action]
                raise ConfigError(
                    path,
                    lines[action],
                    f"{what}: remediate {action!r}: {key} {target!r} is not another remediate step"
                    f"{suggest(target, known)}" + (f" (known: {', '.join(known)})" if known else ""),
                )
    for start in remediations:  # a chain must end: follow every edge from each action
        seen, frontier = {start}, [start]
        while frontier:
            step = remediations[frontier.pop()]
            for target in (step.then, step.on_failure.next if step.on_failure else ""):
                if target == start:
                    raise ConfigError(path, lines[start], f"{what}: remediate {start!r}: its chain leads back to it")
                if target and target not in seen:
                    seen.add(target)
                    frontier.append(target)


def _steps(path: Path, doc: LineDict, what: str, routing: Routing) -> tuple[Step, ...]:
    raw = doc.get("steps")
    if raw is None:
        return (Notify(),)
    if not isinstance(raw, list) or not raw:
        raise ConfigError(path, doc.line_of("steps"), f"{what}: steps must be a non-empty list")
    out: list[Step] = []
    for i, item in enumerate(raw):
        w = f"{what}: steps[{i}]"
        if not isinstance(item, LineDict) or len(item) != 1:
            raise ConfigError(
                path, getattr(item, "line", doc.line_of("steps")), f"{w}: each step is one of notify, remediate, verify"
            )
        ((kind, body),) = item.items()
        line = item.line_of(kind)
        if kind == "notify":
            receiver = (
                ROUTE_RECEIVER
                if body in (None, ROUTE_RECEIVER)
                else (body.get("receiver") if isinstance(body, LineDict) else body)
            )
            if isinstance(body, LineDict):
                check_keys(path, body, ("receiver",), f"{w}: notify")
            out.append(Notify(_check_receiver(path, line, w, receiver, routing)))
        elif kind == "remediate":
            out.append(_remediate(path, body, line, w, routing))
        elif kind == "verify":
            if not isinstance(body, LineDict) or "after" not in body:
                raise ConfigError(path, line, f"{w}: verify needs after (e.g. {{after: 5m}})")
            check_keys(path, body, ("after",), f"{w}: verify")
            after = _duration(path, body, "after", f"{w}: verify", 0)
            if after <= 0:
                raise ConfigError(path, body.line_of("after"), f"{w}: verify.after must be positive")
            out.append(Verify(after))
        else:
            raise ConfigError(
                path, line, f"{w}: unknown step {kind!r}{suggest(str(kind), ['notify', 'remediate', 'verify'])}"
            )
    if sum(isinstance(s, Verify) for s in out) > 1:
        raise ConfigError(path, doc.line_of("steps"), f"{what}: at most one verify step")
    _check_chains(path, doc, what, tuple(out))
    return tuple(out)


def _escalation(path: Path, doc: LineDict, what: str, routing: Routing) -> tuple[EscalationStep, ...]:
    raw = doc.get("escalation")
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            path, doc.line_of("escalation"), f"{what}: escalation must be a non-empty list of {{after, receiver}}"
        )
    out: list[EscalationStep] = []
    for i, item in enumerate(raw):
        w = f"{what}: escalation[{i}]"
        if not isinstance(item, LineDict):
            raise ConfigError(path, doc.line_of("escalation"), f"{w}: expected {{after: 5m, receiver: name}}")
        check_keys(path, item, ("after", "receiver"), w)
        if "after" not in item:
            raise ConfigError(path, item.line, f"{w}: after is required")
        after = _duration(path, item, "after", w, 0)
        receiver = _check_receiver(path, item.line_of("receiver"), w, item.get("receiver"), routing)
        if out and after <= out[-1].after:
            raise ConfigError(
                path,
                item.line_of("after"),
                f"{w}: steps must come later and later (after {after // 1000}s <= previous)",
            )
        out.append(EscalationStep(after, receiver))
    return tuple(out)


SCHEDULE_FIELDS = (
    "name",
    "cron",
    "timezone",
    "catch_up",
    "max_runtime",
    "stagger",
    "targets",
    "remediate",
    "notify",
    "title",
    "org",
    "description",
    "enabled",
)


def load_schedules(path: str | Path, routing: Routing) -> tuple[Schedule, ...]:
    """Cron schedules of ``schedules.yaml`` (``schedules: [...]``), validated (croniter parses the cron)."""
    from streams.model.cron import CronError, validate_cron

    path = Path(path)
    doc = load_yaml(path)
    if doc is None:
        return ()
    if not isinstance(doc, LineDict):
        raise ConfigError(path, 1, "expected a mapping with a 'schedules' list")
    check_keys(path, doc, ("schedules",), "schedules file")
    items = doc.get("schedules") or []
    if not isinstance(items, list):
        raise ConfigError(path, doc.line_of("schedules"), "schedules: expected a list")
    out: list[Schedule] = []
    for i, item in enumerate(items):
        w = f"schedules[{i}]"
        if not isinstance(item, LineDict):
            raise ConfigError(path, doc.line_of("schedules"), f"{w}: expected a mapping")
        check_keys(path, item, SCHEDULE_FIELDS, w)
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(path, item.line, f"{w}: name is required")
        w = f"schedule {name!r}"
        if any(s.name == name for s in out):
            raise ConfigError(path, item.line_of("name"), f"{w}: duplicate name")
        cron, tz = item.get("cron"), item.get("timezone", "UTC")
        try:
            validate_cron(cron, tz)
        except CronError as exc:
            raise ConfigError(path, item.line_of("cron") if "cron" in item else item.line, f"{w}: {exc}") from None
        assert isinstance(cron, str)  # validate_cron checked it
        targets = _strings(path, item, "targets", w) or ("",)
        remediate = _remediate(path, item["remediate"], item.line_of("remediate"), w) if "remediate" in item else None
        notify = item.get("notify")
        receiver = ""
        if notify is not None:
            named = notify.get("receiver") if isinstance(notify, LineDict) else notify
            receiver = _check_receiver(path, item.line_of("notify"), w, named, routing)
        if remediate is None and not receiver:
            raise ConfigError(path, item.line, f"{w}: needs remediate (an HTTP action to dispatch) or notify")
        enabled = item.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(path, item.line_of("enabled"), f"{w}: enabled: expected true or false, got {enabled!r}")
        out.append(
            Schedule(
                name=name,
                cron=cron,
                timezone=tz,
                catch_up=_duration(path, item, "catch_up", w, 3_600_000),
                max_runtime=_duration(path, item, "max_runtime", w, 3_600_000),
                stagger=_duration(path, item, "stagger", w, 0),
                targets=targets,
                remediate=remediate,
                notify_receiver=receiver,
                title=str(item.get("title", name)),
                org=str(item.get("org", "default")),
                line=item.line,
                enabled=enabled,
            )
        )
    return tuple(out)
