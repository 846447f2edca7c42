"""Channels: one module per channel opsloop delivers to, found by looking.

Adding a channel is adding one file to this package, nothing else. The module
defines ``CHANNEL``, an :class:`agents.sinks.base.Channel` holding all of it:

- ``name``: what a receiver's ``channel:`` says;
- ``spec``: the receivers' settings schema, a :class:`streams.model.receivers.ChannelSpec`
  (required, secret-only and optional settings, the default rate limit, and
  ``check_settings``, the check of the values that runs when the routing file loads);
- ``render``: the pure formatter (effect, receiver, secrets) -> request;
- ``check``: the judge of the service's answer; ``idempotent`` and ``ledger``.

:func:`registry` imports every module of this package (``pkgutil.iter_modules``;
names starting with ``_`` are private helpers and skipped) and keys them by name.
:func:`specs` is the same set as schemas only: what the routing loaders in
``streams`` (which never import ``agents``) take as their ``channels=`` parameter.
The sinks deliver through :func:`registry`; the CLI, the decide and digest agents
and the tests load routing with :func:`specs`.

Discovery fails loudly: a module that does not define a ``Channel`` as ``CHANNEL``,
two modules claiming one name, and any error importing a module stop it
(an import error propagates as it is, never swallowed).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from agents.sinks.base import Channel
from streams.errors import OpsloopError
from streams.model.receivers import ChannelSpec


class ChannelRegistryError(OpsloopError, RuntimeError):
    """A module of the channels package is not a valid channel, or two claim one name."""


def discover(package: ModuleType | str) -> dict[str, Channel]:
    """Every channel module of ``package`` by channel name (sorted by name)."""
    pkg = importlib.import_module(package) if isinstance(package, str) else package
    found: dict[str, Channel] = {}
    source: dict[str, str] = {}
    seen: set[str] = set()
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.name in seen:
            continue
        seen.add(info.name)
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        channel = getattr(module, "CHANNEL", None)
        if not isinstance(channel, Channel):
            raise ChannelRegistryError(
                f"{module.__name__}: every module of {pkg.__name__} is a channel and must define CHANNEL "
                f"(an agents.sinks.base.Channel), got {type(channel).__name__}"
            )
        if channel.name in found:
            raise ChannelRegistryError(
                f"{module.__name__}: channel {channel.name!r} is already defined by {source[channel.name]}"
            )
        found[channel.name], source[channel.name] = channel, module.__name__
    return dict(sorted(found.items()))


def registry() -> dict[str, Channel]:
    """Every channel opsloop delivers to, by name."""
    return discover(__name__)


def specs() -> dict[str, ChannelSpec]:
    """Every channel's receiver settings schema, by name: the ``channels=`` of the routing loaders."""
    return {name: channel.spec for name, channel in registry().items()}
