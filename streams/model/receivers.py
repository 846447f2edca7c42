"""Receivers: named destinations of notifications, loaded from the routing YAML.

A receiver names a channel (slack, teams, pagerduty, email, webhook, log, remediate), its
non-secret settings, and for each secret setting the NAME of the environment
variable that holds it. Secret values are read only when a delivery needs them
(:func:`resolve_secrets`), so they never sit in a config object, a record or a
log line; a secret written into ``settings:`` is rejected at load, with file:line.

Which channels exist, and what each needs, is not known here: the channel modules
(``agents/sinks/channels/``, one file per channel) declare it as a :class:`ChannelSpec`,
and every loader takes those specs as a parameter (``channels=``). ``streams`` never
imports ``agents``; the callers (the CLI, the agents, the tests) pass
``agents.sinks.channels.specs()``.

The decide engine references receivers by name and validates those names against
:func:`load_receivers`; the sinks deliver through them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.errors import InvalidInputError
from streams.model.yamlfile import ConfigError, LineDict, check_keys, load_yaml, suggest


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` deliveries per ``period_s`` seconds to one receiver."""

    count: float
    period_s: float

    @property
    def per_second(self) -> float:
        return self.count / self.period_s


class SettingError(InvalidInputError, ValueError):
    """A channel's settings check rejects a value: ``key`` (None: the entry as a whole) and why.

    The loader turns it into a ConfigError with the file and the line of that key.
    """

    def __init__(self, key: str | None, reason: str) -> None:
        self.key, self.reason = key, reason
        super().__init__(f"{key} {reason}" if key else reason)


# The channel's own checks of its setting values: (settings, secrets) -> None, raising
# SettingError. Both mappings are the receiver entry's as written (secrets hold env var names).
SettingsCheck = Callable[[Mapping[str, Any], Mapping[str, Any]], None]


@dataclass(frozen=True)
class ChannelSpec:
    """What a channel needs from a receiver entry (declared by the channel's module).

    ``required`` names must be present as a setting or a secret; ``secret_only``
    names must be secrets (an env var name), never plain settings. ``check_settings``
    type-checks the values where a wrong one would only fail at 3 a.m. on the first
    delivery.
    """

    required: tuple[str, ...] = ()
    secret_only: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    default_rate: RateLimit | None = None
    check_settings: SettingsCheck | None = None


# The channel (and built-in receiver name) of runbook actions: credentials, not notifications.
REMEDIATE_CHANNEL = "remediate"

RECEIVER_FIELDS = ("name", "channel", "settings", "secrets", "rate_limit", "concurrency")
MAX_CONCURRENCY = 64
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RECEIVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_RATE_UNITS = {"per_second": 1.0, "per_minute": 60.0, "per_hour": 3600.0}


@dataclass(frozen=True)
class Receiver:
    name: str
    channel: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)  # setting name -> env var NAME
    rate_limit: RateLimit | None = None  # None: unlimited (the channel default is filled in at load)
    # deliveries in flight at once (lanes); None: OPSLOOP_SINK_CONCURRENCY_PER_DESTINATION. Above 1, a
    # worker killed mid-delivery can leave that many sent-but-not-completed, sent again by the next owner:
    # for receivers that deduplicate by the Idempotency-Key / dedup_key.
    concurrency: int | None = None

    def setting(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)


class MissingSecretError(InvalidInputError, LookupError):
    """A receiver's secret env var is not set; names the variable, never a value."""

    def __init__(self, receiver: str, setting: str, env_var: str) -> None:
        self.receiver, self.setting, self.env_var = receiver, setting, env_var
        super().__init__(f"receiver {receiver!r}: environment variable {env_var} (for {setting}) is not set")


def resolve_secrets(receiver: Receiver, environ: Mapping[str, str]) -> dict[str, str]:
    """The receiver's secret values from ``environ``, read now (at delivery time)."""
    out: dict[str, str] = {}
    for setting, env_var in receiver.secret_env.items():
        value = environ.get(env_var)
        if not value:
            raise MissingSecretError(receiver.name, setting, env_var)
        out[setting] = value
    return out


def load_receivers(path: str | Path, *, channels: Mapping[str, ChannelSpec]) -> dict[str, Receiver]:
    """Receivers of a routing file's ``receivers:`` list (other top-level keys are ignored).

    ``channels``: every channel a receiver may name, with its spec
    (``agents.sinks.channels.specs()``).
    """
    return receivers_from(load_yaml(path), path, channels=channels)


def receivers_from(doc: Any, path: str | Path, *, channels: Mapping[str, ChannelSpec]) -> dict[str, Receiver]:
    """Receivers of an already parsed routing document (for loaders that read the file once)."""
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(path, 1, "expected a mapping with a 'receivers' list")
    items = doc.get("receivers", [])
    if items is None:
        return {}
    if not isinstance(items, list):
        raise ConfigError(path, _line(doc, "receivers"), "receivers: expected a list")
    out: dict[str, Receiver] = {}
    for index, item in enumerate(items):
        receiver = _receiver(path, item, index, _line(doc, "receivers"), channels)
        if receiver.name in out:
            raise ConfigError(path, item.line_of("name"), f"duplicate receiver name {receiver.name!r}")
        out[receiver.name] = receiver
    return out


def _line(mapping: Any, key: str) -> int | None:
    return mapping.line_of(key) if isinstance(mapping, LineDict) else None


def _receiver(
    path: str | Path, item: Any, index: int, list_line: int | None, channels: Mapping[str, ChannelSpec]
) -> Receiver:
    if not isinstance(item, LineDict):
        raise ConfigError(path, list_line, f"receivers[{index}]: expected a mapping with name and channel")
    what = f"receiver {item.get('name', index)!r}"
    check_keys(path, item, RECEIVER_FIELDS, what)
    name = item.get("name")
    if not isinstance(name, str) or not _RECEIVER_NAME.match(name):
        raise ConfigError(
            path, item.line_of("name"), f"receivers[{index}]: name must be a word like 'infra-slack', got {name!r}"
        )
    channel = item.get("channel")
    if not isinstance(channel, str) or channel not in channels:
        shown = channel if isinstance(channel, str) else repr(channel)
        raise ConfigError(
            path,
            item.line_of("channel"),
            f"{what}: unknown channel {shown!r}{suggest(str(channel), channels)}; expected one of {', '.join(channels)}",
        )
    assert isinstance(channel, str)  # a key of channels
    spec = channels[channel]
    settings = _mapping(path, item, "settings", what)
    secrets = _mapping(path, item, "secrets", what)
    known = (*spec.required, *spec.secret_only, *spec.optional)
    for key in settings:
        if key in spec.secret_only:
            raise ConfigError(
                path,
                settings.line_of(key),
                f"{what}: {key} is a secret; name the environment variable that holds it under secrets:",
            )
        if key not in known:
            raise ConfigError(
                path,
                settings.line_of(key),
                f"{what}: unknown setting {key!r} for channel {channel}{suggest(key, known)}",
            )
    for key, env_var in secrets.items():
        if key not in known:
            raise ConfigError(
                path, secrets.line_of(key), f"{what}: unknown secret {key!r} for channel {channel}{suggest(key, known)}"
            )
        if key in settings:
            raise ConfigError(path, secrets.line_of(key), f"{what}: {key} is given both as a setting and as a secret")
        if not isinstance(env_var, str) or not _ENV_NAME.match(env_var):
            raise ConfigError(
                path,
                secrets.line_of(key),
                f"{what}: secrets.{key} must be the NAME of an environment variable (like OPSLOOP_SLACK_WEBHOOK), not a value",
            )
    for key in spec.required:
        if key not in settings and key not in secrets:
            where = "secrets" if key in spec.secret_only else "settings (or secrets)"
            raise ConfigError(path, item.line_of("channel"), f"{what}: channel {channel} needs {key} under {where}")
    _check_channel_settings(path, spec, settings, secrets, what)
    rate = _rate_limit(path, item, what) if "rate_limit" in item else spec.default_rate
    concurrency = item.get("concurrency")
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY
    ):
        raise ConfigError(
            path,
            item.line_of("concurrency"),
            f"{what}: concurrency must be a whole number from 1 to {MAX_CONCURRENCY}, got {concurrency!r}",
        )
    return Receiver(
        name=name,
        channel=channel,
        settings=dict(settings),
        secret_env=dict(secrets),
        rate_limit=rate,
        concurrency=concurrency,
    )


def _mapping(path: str | Path, item: LineDict, key: str, what: str) -> LineDict:
    value = item.get(key)
    if value is None:
        empty = LineDict()
        empty.line, empty.key_lines = item.line_of(key), {}
        return empty
    if not isinstance(value, LineDict):
        raise ConfigError(path, item.line_of(key), f"{what}: {key} must be a mapping")
    return value


def _check_channel_settings(
    path: str | Path, spec: ChannelSpec, settings: LineDict, secrets: LineDict, what: str
) -> None:
    """The channel's own value checks (its spec's ``check_settings``), then the ones every channel shares."""

    def fail(key: str, reason: str) -> None:
        raise ConfigError(path, settings.line_of(key), f"{what}: {key} {reason}")

    if spec.check_settings is not None:
        try:
            spec.check_settings(settings, secrets)
        except SettingError as exc:
            if exc.key is None:
                raise ConfigError(path, secrets.line or settings.line, f"{what}: {exc.reason}") from None
            line = settings.line_of(exc.key) if exc.key in settings else secrets.line_of(exc.key)
            raise ConfigError(path, line, f"{what}: {exc.key} {exc.reason}") from None
    for key in ("url",):
        if key in settings and not (
            isinstance(settings[key], str) and settings[key].startswith(("http://", "https://"))
        ):
            fail(key, f"must be an http(s) URL, got {settings[key]!r}")


def _rate_limit(path: str | Path, item: LineDict, what: str) -> RateLimit | None:
    value = item["rate_limit"]
    line = item.line_of("rate_limit")
    if value is None or value == "none":
        return None
    if not isinstance(value, LineDict) or len(value) != 1 or next(iter(value)) not in _RATE_UNITS:
        raise ConfigError(
            path,
            line,
            f"{what}: rate_limit must be one of {{per_second: N}}, {{per_minute: N}}, {{per_hour: N}} or none",
        )
    unit, count = next(iter(value.items()))
    if isinstance(count, bool) or not isinstance(count, (int, float)) or count <= 0:
        raise ConfigError(path, line, f"{what}: rate_limit.{unit} must be a positive number, got {count!r}")
    return RateLimit(float(count), _RATE_UNITS[unit])


def notify_refusal(receiver: Receiver) -> str | None:
    """Why ``receiver`` cannot take notifications (None: it can); one rule for routes and runbooks."""
    if receiver.channel == REMEDIATE_CHANNEL:
        return (
            f"receiver {receiver.name!r} is a remediate receiver (credentials for runbook actions), "
            "not a notification channel"
        )
    return None


def builtin_receivers() -> dict[str, Receiver]:
    """Receivers that exist without a routing file: ``log`` (the demo's and the default route) and
    ``remediate`` (runbook actions without credentials; a routing file's own ``remediate`` replaces it)."""
    return {
        "log": Receiver(name="log", channel="log"),
        REMEDIATE_CHANNEL: Receiver(name=REMEDIATE_CHANNEL, channel=REMEDIATE_CHANNEL),
    }
