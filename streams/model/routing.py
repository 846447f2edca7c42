"""Routing as code: receivers, an Alertmanager-like route tree, and inhibit rules.

``runbooks/routing.yaml`` holds three things an Alertmanager user will recognise:
``receivers:`` (loaded by :mod:`streams.model.receivers`, shared with the sinks),
``route:`` (a tree: receiver, matchers, continue, child routes, group timings that
children inherit) and ``inhibit_rules:`` (a firing source alert mutes matching
targets that share the ``equal`` labels). Matching is Alertmanager's: depth first,
the first matching child wins unless it says ``continue: true``, and a route with no
matching child answers with its own receiver.

Routes see the event's labels plus opsloop's own facts (``ROUTING_FACTS``): the
classifier's ``category`` and ``severity`` (normalised to info | warning | action |
urgent, replacing a sender's ``severity`` label such as ``critical``), and the event's
``org``, ``source``, ``kind`` and ``event_type``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.model.matchers import Matcher, MatcherError, equality_matchers, matches_all, parse_matcher
from streams.model.receivers import ChannelSpec, Receiver, builtin_receivers, notify_refusal, receivers_from
from streams.model.taxonomy import SEVERITIES
from streams.model.yamlfile import ConfigError, LineDict, check_keys, load_yaml, parse_duration_ms

ROUTING_FACTS = ("category", "severity", "org", "source", "kind", "event_type")

# Alertmanager's defaults.
DEFAULT_GROUP_WAIT_MS = 30_000
DEFAULT_GROUP_INTERVAL_MS = 300_000
DEFAULT_REPEAT_INTERVAL_MS = 4 * 3_600_000

ROUTE_FIELDS = (
    "receiver",
    "matchers",
    "match",
    "match_re",
    "continue",
    "routes",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "upstream_grouped",
    "description",
)
INHIBIT_FIELDS = (
    "source_matchers",
    "target_matchers",
    "source_match",
    "target_match",
    "source_match_re",
    "target_match_re",
    "equal",
    "description",
)
TOP_FIELDS = ("receivers", "route", "inhibit_rules")


@dataclass(frozen=True)
class Timing:
    """When a session's notifications go out (Alertmanager's three intervals), in ms."""

    group_wait: int = DEFAULT_GROUP_WAIT_MS
    group_interval: int = DEFAULT_GROUP_INTERVAL_MS
    repeat_interval: int = DEFAULT_REPEAT_INTERVAL_MS
    # Sources that group before sending (Alertmanager waited its own group_wait):
    # their events are not held a second time.
    upstream_grouped: tuple[str, ...] = ("alertmanager", "grafana")

    def wait_for(self, source: str) -> int:
        return 0 if source in self.upstream_grouped else self.group_wait


@dataclass(frozen=True)
class Route:
    receiver: str
    matchers: tuple[Matcher, ...] = ()
    continue_: bool = False
    routes: tuple[Route, ...] = ()
    timing: Timing = field(default_factory=Timing)
    path: str = "route"
    line: int = 0


@dataclass(frozen=True)
class RouteMatch:
    receiver: str
    path: str
    timing: Timing


@dataclass(frozen=True)
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()
    line: int = 0


@dataclass(frozen=True)
class Routing:
    receivers: Mapping[str, Receiver]
    route: Route
    inhibit_rules: tuple[InhibitRule, ...] = ()
    path: str = ""

    def channel_of(self, receiver: str) -> str:
        found = self.receivers.get(receiver)
        return found.channel if found else "log"

    def match(self, labels: Mapping[str, str]) -> list[RouteMatch]:
        """The routes an event's routing labels reach (at least the root's receiver)."""
        return match_route(self.route, labels)

    def receivers_for(self, labels: Mapping[str, str]) -> list[str]:
        seen: list[str] = []
        for m in self.match(labels):
            if m.receiver not in seen:
                seen.append(m.receiver)
        return seen


def routing_labels(
    labels: Mapping[str, str], *, category: str, severity: str, org: str, source: str, kind: str, event_type: str
) -> dict[str, str]:
    """The label set routes, runbooks, silences and inhibit rules match against."""
    out = dict(labels)
    out.update(category=category, severity=severity, org=org, source=source, kind=kind, event_type=event_type)
    return out


def match_route(route: Route, labels: Mapping[str, str]) -> list[RouteMatch]:
    if not matches_all(route.matchers, labels):
        return []
    found: list[RouteMatch] = []
    for child in route.routes:
        hits = match_route(child, labels)
        if hits:
            found.extend(hits)
            if not child.continue_:
                break
    return found or [RouteMatch(route.receiver, route.path, route.timing)]


def default_routing() -> Routing:
    """Everything to the ``log`` receiver: what runs when no routing file exists."""
    return Routing(receivers=builtin_receivers(), route=Route(receiver="log"))


# -- loading ---------------------------------------------------------------------


def load_routing(path: str | Path, *, channels: Mapping[str, ChannelSpec]) -> Routing:
    """Load and validate a routing file; any error is a ConfigError with file:line.

    ``channels``: the channels a receiver may name (``agents.sinks.channels.specs()``).
    """
    path = Path(path)
    doc = load_yaml(path)
    if doc is None:
        doc = LineDict()
        doc.line, doc.key_lines = 1, {}
    if not isinstance(doc, LineDict):
        raise ConfigError(path, 1, "expected a mapping with receivers, route and inhibit_rules")
    check_keys(path, doc, TOP_FIELDS, "routing")
    receivers = {**builtin_receivers(), **receivers_from(doc, path, channels=channels)}
    raw_route = doc.get("route")
    if raw_route is None:
        route = Route(receiver="log", line=doc.line)
    else:
        if not isinstance(raw_route, LineDict):
            raise ConfigError(path, doc.line_of("route"), "route: expected a mapping")
        for key in ("matchers", "match", "match_re"):
            if key in raw_route:
                raise ConfigError(
                    path, raw_route.line_of(key), "route: the root route must match everything (no matchers)"
                )
        if "receiver" not in raw_route:
            raise ConfigError(path, raw_route.line, "route: the root route needs a default receiver")
        route = _route(path, raw_route, Timing(), "route", None, receivers)
    rules_raw = doc.get("inhibit_rules") or []
    if not isinstance(rules_raw, list):
        raise ConfigError(path, doc.line_of("inhibit_rules"), "inhibit_rules: expected a list")
    rules = tuple(_inhibit_rule(path, item, i, doc.line_of("inhibit_rules")) for i, item in enumerate(rules_raw))
    return Routing(receivers=receivers, route=route, inhibit_rules=rules, path=str(path))


def _duration(path: Path, mapping: LineDict, key: str, what: str, default: int) -> int:
    if key not in mapping:
        return default
    try:
        value = parse_duration_ms(mapping[key])
    except ValueError as exc:
        raise ConfigError(path, mapping.line_of(key), f"{what}: {key}: {exc}") from None
    if value < 0:
        raise ConfigError(path, mapping.line_of(key), f"{what}: {key} must not be negative")
    return value


def parse_matcher_list(path: Path, mapping: LineDict, key: str, what: str) -> tuple[Matcher, ...]:
    """``key:`` as a list of matcher strings, each validated (file:line on error)."""
    raw = mapping.get(key)
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(path, mapping.line_of(key), f"{what}: {key} must be a list like ['service=\"db\"']")
    out = []
    for item in raw:
        try:
            matcher = parse_matcher(item)
        except MatcherError as exc:
            raise ConfigError(path, mapping.line_of(key), f"{what}: {key}: {exc}") from None
        check_fact_value(path, mapping.line_of(key), what, matcher)
        out.append(matcher)
    return tuple(out)


def parse_match_maps(
    path: Path, mapping: LineDict, what: str, eq_key: str = "match", re_key: str = "match_re"
) -> tuple[Matcher, ...]:
    out: list[Matcher] = []
    for key, regex in ((eq_key, False), (re_key, True)):
        raw = mapping.get(key)
        if raw is None:
            continue
        if not isinstance(raw, LineDict):
            raise ConfigError(path, mapping.line_of(key), f"{what}: {key} must be a mapping of label: value")
        try:
            matchers = equality_matchers(raw, regex=regex)
        except MatcherError as exc:
            raise ConfigError(path, mapping.line_of(key), f"{what}: {key}: {exc}") from None
        for m in matchers:
            check_fact_value(path, raw.line_of(m.name), what, m)
        out.extend(matchers)
    return tuple(out)


def check_fact_value(path: Path | str, line: int | None, what: str, matcher: Matcher) -> None:
    """Catch the classic mistake: matching a sender's severity word opsloop normalises away."""
    if matcher.name == "severity" and matcher.op in ("=", "!=") and matcher.value not in SEVERITIES:
        from streams.model.taxonomy import normalize_severity

        hint = normalize_severity(matcher.value)
        tip = f" ({matcher.value!r} is normalised to {hint!r})" if hint else ""
        raise ConfigError(path, line, f"{what}: severity is one of {', '.join(SEVERITIES)}, not {matcher.value!r}{tip}")


def _route(
    path: Path,
    raw: LineDict,
    parent: Timing,
    where: str,
    parent_receiver: str | None,
    receivers: Mapping[str, Receiver],
) -> Route:
    check_keys(path, raw, ROUTE_FIELDS, where)
    receiver = raw.get("receiver", parent_receiver)
    if not isinstance(receiver, str) or not receiver:
        raise ConfigError(path, raw.line_of("receiver"), f"{where}: receiver must be a receiver name")
    if receiver not in receivers:
        from streams.model.yamlfile import suggest

        raise ConfigError(
            path, raw.line_of("receiver"), f"{where}: unknown receiver {receiver!r}{suggest(receiver, receivers)}"
        )
    refusal = notify_refusal(receivers[receiver])
    if refusal:
        raise ConfigError(path, raw.line_of("receiver"), f"{where}: {refusal}")
    matchers = parse_matcher_list(path, raw, "matchers", where) + parse_match_maps(path, raw, where)
    cont = raw.get("continue", False)
    if not isinstance(cont, bool):
        raise ConfigError(path, raw.line_of("continue"), f"{where}: continue must be true or false")
    grouped = raw.get("upstream_grouped", list(parent.upstream_grouped))
    if not isinstance(grouped, list) or not all(isinstance(s, str) for s in grouped):
        raise ConfigError(path, raw.line_of("upstream_grouped"), f"{where}: upstream_grouped must be a list of sources")
    timing = Timing(
        group_wait=_duration(path, raw, "group_wait", where, parent.group_wait),
        group_interval=_duration(path, raw, "group_interval", where, parent.group_interval),
        repeat_interval=_duration(path, raw, "repeat_interval", where, parent.repeat_interval),
        upstream_grouped=tuple(grouped),
    )
    if timing.group_interval <= 0 or timing.repeat_interval <= 0:
        raise ConfigError(path, raw.line, f"{where}: group_interval and repeat_interval must be positive")
    children_raw = raw.get("routes") or []
    if not isinstance(children_raw, list):
        raise ConfigError(path, raw.line_of("routes"), f"{where}: routes must be a list")
    children = []
    for i, child in enumerate(children_raw):
        if not isinstance(child, LineDict):
            raise ConfigError(path, raw.line_of("routes"), f"{where}.routes[{i}]: expected a mapping")
        children.append(_route(path, child, timing, f"{where}.routes[{i}]", receiver, receivers))
    return Route(
        receiver=receiver,
        matchers=matchers,
        continue_=cont,
        routes=tuple(children),
        timing=timing,
        path=where,
        line=raw.line,
    )


def _inhibit_rule(path: Path, item: Any, index: int, line: int) -> InhibitRule:
    what = f"inhibit_rules[{index}]"
    if not isinstance(item, LineDict):
        raise ConfigError(path, line, f"{what}: expected a mapping")
    check_keys(path, item, INHIBIT_FIELDS, what)
    source = parse_matcher_list(path, item, "source_matchers", what) + parse_match_maps(
        path, item, what, "source_match", "source_match_re"
    )
    target = parse_matcher_list(path, item, "target_matchers", what) + parse_match_maps(
        path, item, what, "target_match", "target_match_re"
    )
    if not source or not target:
        raise ConfigError(path, item.line, f"{what}: needs both source_matchers and target_matchers")
    equal = item.get("equal", [])
    if not isinstance(equal, list) or not all(isinstance(e, str) for e in equal):
        raise ConfigError(path, item.line_of("equal"), f"{what}: equal must be a list of label names")
    if "org" not in equal:
        # An inhibit rule holds within one org, as a silence made by a one-org token does: a rule copied from an
        # Alertmanager config (equal: [service]) let any producer of org a mute org b's alerts of that service.
        equal = [*equal, "org"]
    return InhibitRule(source=source, target=target, equal=tuple(equal), line=item.line)


def receivers_in(routes: Iterable[RouteMatch]) -> list[str]:
    out: list[str] = []
    for m in routes:
        if m.receiver not in out:
            out.append(m.receiver)
    return out


def describe_matchers(matchers: Sequence[Matcher]) -> str:
    return "{" + ", ".join(str(m) for m in matchers) + "}"
