"""What each producer may write: orgs, event kinds and types, control events.

A bearer token proves *who* posts; its scope says *what* that producer may write.
Scopes are configured beside the tokens, by producer name, in
``OPSLOOP_INGEST_SCOPES_FILE`` (default ``<runbooks dir>/ingest-scopes.yaml``; a
missing file means "no scopes configured") and/or ``OPSLOOP_INGEST_SCOPES`` (the
same YAML inline, e.g. ``{scanner: {orgs: [acme], kinds: [scan]}}``)::

    producers:
      scanner:  {orgs: [acme], kinds: [scan, telemetry], types: ["scan.*", "metric.*"]}
      console:  {orgs: ["*"], control: true, operator: true}

* ``orgs``: the orgs it may write (``"*"``: any). Default ``["*"]``.
* ``kinds``: telemetry / webhook / scan, and timer only when named. Default: the first
  three. Timer events are opsloop's own (its ticker writes them to Kafka); one
  ``timer.fired`` posted by a producer fired a session's whole escalation chain at once.
* ``types``: glob patterns of event types (``alert.*``). Default ``["*"]``.
* ``control``: may it write control events (:data:`CONTROL_TYPES`: silences, acks,
  resolves, remediation approvals)? Default **false**: a token without an entry
  keeps working for everything it could post before, except control events.
* ``operator``: a silence it creates applies as written (across orgs); without it,
  ingest adds an ``org="<org>"`` matcher so the silence only covers its own org.

Signed webhooks have a fixed scope of their own (the provider's event types, in
the org the post names); every accepted event records who produced it in the
``opsloop_producer`` annotation (``token:<name>`` or ``webhook:<provider>``),
which a client cannot set.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.errors import InvalidInputError
from streams.ingest.errors import BadRequest, Forbidden
from streams.kafka.catalogue import EVENT_KINDS
from streams.model.records import InvalidEventError, check_org_name
from streams.model.silences import SILENCE_CREATED, SILENCE_TYPES, SilenceError, SilenceScopeError, scoped_to_org
from streams.model.yamlfile import LineDict, load_yaml, load_yaml_text

CONTROL_TYPES = frozenset(
    {
        "silence.created",
        "silence.expired",
        "ack",
        "incident.acknowledged",
        "incident.resolved",
        "resolve",
        "remediation.approved",
        "remediation.rejected",
        # A remediation's outcome comes from the worker's sink (streams/core/outcomes.py); a forged
        # failure would run a runbook's on_failure (another action, an escalation).
        "remediation.succeeded",
        "remediation.failed",
        "remediation.dead",
        "remediation.timed_out",
    }
)
PRODUCER_ANNOTATION = "opsloop_producer"
# `source` values that name a signed channel: a bearer token may not claim them.
SIGNED_SOURCES = frozenset({"github", "pagerduty"})
SCOPE_KEYS = ("orgs", "kinds", "types", "control", "operator")


class ScopeConfigError(InvalidInputError, ValueError):
    """The scopes configuration is malformed; the message names the producer and key."""


# What a producer may write when its scope does not say: every kind but timer (see the module's docstring).
DEFAULT_KINDS = tuple(kind for kind in EVENT_KINDS if kind != "timer")


@dataclass(frozen=True)
class Scope:
    orgs: tuple[str, ...] = ("*",)
    kinds: tuple[str, ...] = DEFAULT_KINDS
    types: tuple[str, ...] = ("*",)
    control: bool = False
    operator: bool = False

    def allows_org(self, org: str) -> bool:
        return "*" in self.orgs or org in self.orgs

    @property
    def sole_org(self) -> str | None:
        """The one org this scope may write, or None (several, or any)."""
        return self.orgs[0] if len(self.orgs) == 1 and self.orgs[0] != "*" else None


DEFAULT_SCOPE = Scope()


@dataclass(frozen=True)
class Principal:
    """Who produced a post: ``via`` is ``token`` or ``webhook``; ``name`` the producer or provider."""

    name: str
    via: str
    scope: Scope = field(default=DEFAULT_SCOPE)

    @property
    def label(self) -> str:
        return f"{self.via}:{self.name}"


def webhook_principal(provider: str, types: Iterable[str]) -> Principal:
    """A signed provider: any org (the URL's), kind webhook, only its own event types (acks included)."""
    return Principal(provider, "webhook", Scope(kinds=("webhook",), types=tuple(types), control=True))


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ScopeConfigError(f"{where}: expected a non-empty list of strings")
    return tuple(value)


def _at(origin: str, mapping: Any, key: str) -> str:
    """``file:line`` of ``key`` in a mapping read from a file (its line is known), else the origin alone."""
    line = mapping.line_of(key) if isinstance(mapping, LineDict) else 0
    return f"{origin}:{line}" if line else origin


def parse_scopes(data: Any, origin: str) -> dict[str, Scope]:
    """``{"producers": {name: {...}}}`` (or the mapping of producers itself) → name → Scope."""
    if data is None:
        return {}
    if isinstance(data, Mapping) and set(data) == {"producers"}:
        data = data["producers"] or {}
    if not isinstance(data, Mapping):
        raise ScopeConfigError(f"{origin}: expected a mapping of producer name to scope")
    scopes = {}
    for name, spec in data.items():
        where = f"{_at(origin, data, name)}: producer {name!r}"
        if not isinstance(spec, Mapping):
            raise ScopeConfigError(f"{where}: expected a mapping with {', '.join(SCOPE_KEYS)}")
        unknown = sorted(set(spec) - set(SCOPE_KEYS))
        if unknown:
            at = f"{_at(origin, spec, unknown[0])}: producer {name!r}"
            raise ScopeConfigError(f"{at}: unknown key {unknown[0]!r}; keys: {', '.join(SCOPE_KEYS)}")
        kinds = _strings(spec.get("kinds", list(DEFAULT_KINDS)), f"{where}.kinds")
        bad = [k for k in kinds if k not in EVENT_KINDS]
        if bad:
            raise ScopeConfigError(f"{where}.kinds: unknown kind {bad[0]!r}; kinds: {', '.join(EVENT_KINDS)}")
        orgs = _strings(spec.get("orgs", ["*"]), f"{where}.orgs")
        for org in orgs:
            try:
                check_org_name(org)
            except InvalidEventError as exc:
                raise ScopeConfigError(f"{where}.orgs: {exc.reason}") from None
        for key in ("control", "operator"):
            if not isinstance(spec.get(key, False), bool):
                raise ScopeConfigError(f"{where}.{key}: expected true or false")
        scopes[str(name)] = Scope(
            orgs=orgs,
            kinds=kinds,
            types=_strings(spec.get("types", ["*"]), f"{where}.types"),
            control=spec.get("control", False),
            operator=spec.get("operator", False),
        )
    return scopes


def load_scopes(path: Path | None, inline: str) -> dict[str, Scope]:
    """The file's scopes plus the inline variable's; one producer in both is an error."""
    scopes: dict[str, Scope] = {}
    # The loader the runbooks use: the grant file is the last place a duplicated producer should pass quietly
    # (the second entry won), and its errors name the line.
    if path is not None and Path(path).exists():
        scopes.update(parse_scopes(load_yaml(path), str(path)))
    if inline.strip():
        data = load_yaml_text(inline, "OPSLOOP_INGEST_SCOPES")
        for name, scope in parse_scopes(data, "OPSLOOP_INGEST_SCOPES").items():
            if name in scopes:
                raise ScopeConfigError(f"OPSLOOP_INGEST_SCOPES: producer {name!r} also has a scope in {path}")
            scopes[name] = scope
    return scopes


def authorize(principal: Principal, event: dict[str, Any]) -> None:
    """403 naming the reason when ``principal`` may not write ``event``; else stamp and scope it (in place)."""
    scope, who = principal.scope, f"{principal.via} {principal.name!r}"
    org, kind, etype = event.get("org", ""), event.get("kind", ""), str(event.get("type", ""))
    if not scope.allows_org(org):
        raise Forbidden(f"{who} may not write to org {org[:128]!r} (allowed: {', '.join(scope.orgs)})")
    if etype in CONTROL_TYPES and not scope.control:
        raise Forbidden(f"{who} may not create control events ({etype}); grant it control: true in its scope")
    if kind not in scope.kinds:
        raise Forbidden(f"{who} may not write {kind} events (allowed: {', '.join(scope.kinds)})")
    if not any(fnmatch.fnmatchcase(etype, pattern) for pattern in scope.types):
        raise Forbidden(f"{who} may not write events of type {etype[:128]!r} (allowed: {', '.join(scope.types)})")
    if principal.via == "token" and str(event.get("source", "")) in SIGNED_SOURCES:
        raise Forbidden(f"{who} may not claim source {event['source']!r}: it is reserved for the signed webhook")
    annotations = dict(event.get("annotations") or {})
    annotations[PRODUCER_ANNOTATION] = principal.label
    event["annotations"] = annotations
    if etype in SILENCE_TYPES and not scope.operator:
        scope_silence_to_org(event, org)


def scope_silence_to_org(event: dict[str, Any], org: str) -> None:
    """Limit a silence event to ``org``: ``"org": org`` in its body, so decide lets it create, replace or expire
    only that org's own silences (:func:`streams.core.tables.silence_change`), and for a silence.created
    ``org="<org>"`` among its matchers (replacing any org matcher the client wrote)."""
    payload = event.get("payload")
    if not isinstance(payload, dict):
        return
    try:
        body = json.loads(payload.get("body_json") or "{}")
    except (TypeError, ValueError):
        return  # decide refuses an unreadable silence anyway
    if not isinstance(body, dict):
        return
    body["org"] = org
    if event.get("type") == SILENCE_CREATED and isinstance(body.get("matchers"), list):
        try:
            body["matchers"] = scoped_to_org(body["matchers"], org)
        except SilenceScopeError as exc:  # an org matcher naming another org: not this credential's to silence
            raise Forbidden(str(exc)) from None
        except (
            SilenceError
        ) as exc:  # selects nothing as written (only through /ingest/events: amtool's is a 400 sooner)
            raise BadRequest("payload.body_json", str(exc)) from None
    payload = dict(payload)
    payload["body_json"] = json.dumps(body, sort_keys=True)
    event["payload"] = payload
