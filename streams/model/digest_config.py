"""Who gets a daily digest, and when: ``runbooks/digest.yaml``, loaded with the runbook set.

```yaml
default: {hour: 8, timezone: UTC}           # every org seen gets one at 08:00 UTC
digests:
  - {org: acme, hour: 9, timezone: Europe/Berlin}
  - {org: sandbox, enabled: false}
```

``default`` applies to every org the worker sees traffic of (``enabled: false`` there
sends digests only to the orgs listed); an entry under ``digests`` overrides it for
one org (a listed org is enabled unless its entry says ``enabled: false``; hour and
time zone it does not give come from ``default``). Without the file every org gets the default (08:00 UTC). The file is part of
the runbook set: ``opsloop check`` validates it and a worker refuses to start on a
broken one, with ``file:line: reason`` like every other file of the set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from streams.model.cron import CronError, zone_info
from streams.model.records import InvalidEventError, check_org_name
from streams.model.yamlfile import ConfigError, LineDict, check_keys, load_yaml

DIGEST_FILE = "digest.yaml"
DEFAULT_HOUR = 8
DEFAULT_TIMEZONE = "UTC"
TOP_FIELDS = ("default", "digests")
DEFAULT_FIELDS = ("enabled", "hour", "timezone")
ENTRY_FIELDS = ("org", "enabled", "hour", "timezone", "description")


@dataclass(frozen=True)
class OrgDigest:
    """When one org's digest goes out: the local ``hour`` in the IANA ``timezone``."""

    org: str = "*"
    enabled: bool = True
    hour: int = DEFAULT_HOUR
    timezone: str = DEFAULT_TIMEZONE
    line: int = 0


@dataclass(frozen=True)
class DigestConfig:
    default: OrgDigest = OrgDigest()
    orgs: Mapping[str, OrgDigest] = field(default_factory=dict)
    path: str = ""

    def for_org(self, org: str) -> OrgDigest:
        return self.orgs.get(org) or replace(self.default, org=org)

    def enabled(self, org: str) -> bool:
        # asked once per decision: the default's flag without building the org's copy of it (for_org)
        return (self.orgs.get(org) or self.default).enabled

    @property
    def any_enabled(self) -> bool:
        return self.default.enabled or any(o.enabled for o in self.orgs.values())


def _zone_ok(tz: Any) -> bool:
    """A name ``zoneinfo`` opens (:func:`zone_info`, no aliases): the core's day arithmetic uses ``ZoneInfo(tz)``."""
    if not isinstance(tz, str) or not tz:
        return False
    try:
        zone_info(tz)
    except CronError:
        return False
    return True


def _settings(path: Path, raw: LineDict, what: str, base: OrgDigest) -> OrgDigest:
    """hour / timezone / enabled of one mapping over ``base``; each error names its line."""
    enabled, hour, tz = base.enabled, base.hour, base.timezone
    if "enabled" in raw:
        enabled = raw["enabled"]
        if not isinstance(enabled, bool):
            raise ConfigError(path, raw.line_of("enabled"), f"{what}: enabled must be true or false, got {enabled!r}")
    if "hour" in raw:
        hour = raw["hour"]
        if isinstance(hour, bool) or not isinstance(hour, int) or not 0 <= hour <= 23:
            raise ConfigError(
                path, raw.line_of("hour"), f"{what}: hour must be an integer from 0 to 23 (local time), got {hour!r}"
            )
    if "timezone" in raw:
        tz = raw["timezone"]
        if not _zone_ok(tz):
            raise ConfigError(
                path,
                raw.line_of("timezone"),
                f"{what}: unknown time zone {str(tz)[:64]!r} (use an IANA name like Europe/Berlin)",
            )
    return OrgDigest(org=base.org, enabled=enabled, hour=hour, timezone=tz, line=raw.line)


def load_digest_config(path: str | Path) -> DigestConfig:
    """Parse and validate a digest file; the first error is a ConfigError with file:line."""
    path = Path(path)
    doc = load_yaml(path)
    if doc is None:
        return DigestConfig(path=str(path))
    if not isinstance(doc, LineDict):
        raise ConfigError(path, 1, "expected a mapping with 'default' and/or a 'digests' list")
    check_keys(path, doc, TOP_FIELDS, "digest file")
    default = OrgDigest()
    if doc.get("default") is not None:
        raw = doc["default"]
        if not isinstance(raw, LineDict):
            raise ConfigError(path, doc.line_of("default"), "default: expected a mapping (hour, timezone, enabled)")
        check_keys(path, raw, DEFAULT_FIELDS, "default")
        default = _settings(path, raw, "default", default)
    items = doc.get("digests") or []
    if not isinstance(items, list):
        raise ConfigError(path, doc.line_of("digests"), "digests: expected a list of {org, hour, timezone}")
    orgs: dict[str, OrgDigest] = {}
    for i, item in enumerate(items):
        what = f"digests[{i}]"
        if not isinstance(item, LineDict):
            raise ConfigError(
                path, doc.line_of("digests"), f"{what}: expected a mapping (org, hour, timezone, enabled)"
            )
        check_keys(path, item, ENTRY_FIELDS, what)
        org = item.get("org")
        if not isinstance(org, str) or not org:
            raise ConfigError(path, item.line_of("org"), f"{what}: org is required (a non-empty string)")
        try:
            check_org_name(org)
        except InvalidEventError as exc:
            raise ConfigError(path, item.line_of("org"), f"{what}: {exc}") from None
        what = f"digest for org {org!r}"
        if org in orgs:
            raise ConfigError(path, item.line_of("org"), f"{what}: listed twice (first on line {orgs[org].line})")
        orgs[org] = _settings(
            path, item, what, replace(default, org=org, enabled=True)
        )  # listed: on unless it says not
    return DigestConfig(default=default, orgs=orgs, path=str(path))
