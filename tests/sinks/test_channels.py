"""A channel is one module: the registry finds every file of agents/sinks/channels, nothing else names it."""

from __future__ import annotations

import ast
import asyncio
import logging
import pkgutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import agents.sinks.channels as channels_pkg
from agents.sinks.base import Channel
from agents.sinks.channels import ChannelRegistryError, discover, registry, specs
from streams.db import make_engine
from streams.model.receivers import ChannelSpec, load_receivers
from streams.model.routing import load_routing
from streams.model.yamlfile import ConfigError
from tests.sinks.helpers import Harness, make_effect

ROOT = Path(__file__).resolve().parents[2]

# A whole new channel, as its author would write it: this file and nothing else.
PIGEON = '''
"""Carrier pigeon: the notification's title, tied to a leg, flown to a loft."""

from agents.sinks.base import Channel, LogRequest, notify_of
from streams.model.receivers import ChannelSpec, RateLimit, SettingError


def check_settings(settings, secrets):
    if not str(settings.get("loft", "")).isalpha():
        raise SettingError("loft", f"must be a word, got {settings.get('loft')!r}")


def render(effect, receiver, secrets):
    return LogRequest(line=f"coo: {notify_of(effect)['title']} to {receiver.setting('loft')}")


CHANNEL = Channel(
    name="pigeon", spec=ChannelSpec(required=("loft",), default_rate=RateLimit(2, 60.0), check_settings=check_settings),
    render=render, idempotent=True, ledger=False,
)
'''


def sample_receiver(name: str, spec: ChannelSpec) -> str:
    """A routing entry with every required setting of ``spec`` (secrets as env var names)."""
    values = {"url": "https://hooks.example.com/x", "to": "oncall@example.com", "from": "opsloop@example.com"}
    settings = {k: values.get(k, "value") for k in spec.required if k not in spec.secret_only}
    secrets = {k: f"OPSLOOP_TEST_{name.upper()}_{k.upper()}" for k in spec.required if k in spec.secret_only}
    lines = [f"  - name: {name}-receiver", f"    channel: {name}"]
    if settings:
        lines += ["    settings:", *(f"      {k}: {v!r}" for k, v in settings.items())]
    if secrets:
        lines += ["    secrets:", *(f"      {k}: {v}" for k, v in secrets.items())]
    return "\n".join(lines)


def test_every_module_of_the_package_is_a_registered_channel_with_a_spec() -> None:
    modules = [m.name for m in pkgutil.iter_modules(channels_pkg.__path__) if not m.name.startswith("_")]
    found = registry()
    assert len(modules) == len(found) >= 7
    for module_name in modules:
        module = sys.modules[f"agents.sinks.channels.{module_name}"]
        channel = module.CHANNEL
        assert isinstance(channel, Channel) and found[channel.name] is channel
        assert isinstance(channel.spec, ChannelSpec)
    assert specs() == {name: channel.spec for name, channel in found.items()}


def test_a_receiver_of_every_channel_validates(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text("receivers:\n" + "\n".join(sample_receiver(name, spec) for name, spec in specs().items()) + "\n")
    receivers = load_receivers(path, channels=specs())
    assert {r.channel for r in receivers.values()} == set(registry())
    for receiver in receivers.values():
        assert receiver.rate_limit == specs()[receiver.channel].default_rate


def test_the_channel_specs_keep_their_schemas() -> None:
    """What moved out of streams/model/receivers.py: each channel's schema as it was."""
    s = specs()
    assert (s["slack"].secret_only, s["slack"].default_rate.per_second) == (("webhook_url",), 1.0)
    assert s["pagerduty"].default_rate.per_second == 2.0 and s["teams"].default_rate.per_second == 4.0
    assert s["email"].required == ("host", "from", "to") and s["email"].secret_only == ("password",)
    assert s["webhook"].required == ("url", "signing_key") and s["webhook"].default_rate is None
    assert s["log"] == ChannelSpec() and s["remediate"].required == ()
    assert s["slack"].check_settings is not None and s["email"].check_settings is not None


@pytest.fixture
def pigeon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """``pigeon.py`` dropped into the channels package (a second directory on its __path__)."""
    extra = tmp_path / "more-channels"
    extra.mkdir()
    (extra / "pigeon.py").write_text(PIGEON)
    monkeypatch.setattr(channels_pkg, "__path__", [*channels_pkg.__path__, str(extra)])
    yield extra
    sys.modules.pop("agents.sinks.channels.pigeon", None)


def test_adding_a_channel_is_one_file(pigeon: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert "pigeon" in registry() and specs()["pigeon"].required == ("loft",)
    routing = tmp_path / "routing.yaml"
    routing.write_text(
        "receivers:\n  - name: coop\n    channel: pigeon\n    settings: {loft: north}\nroute:\n  receiver: coop\n"
    )
    loaded = load_routing(routing, channels=specs())
    assert loaded.receivers["coop"].channel == "pigeon" and loaded.receivers["coop"].rate_limit.count == 2

    # Its settings check runs at load, with file:line, like the built-in channels'.
    routing.write_text("receivers:\n  - name: coop\n    channel: pigeon\n    settings:\n      loft: 'n0rth!'\n")
    with pytest.raises(ConfigError) as err:
        load_routing(routing, channels=specs())
    assert str(err.value) == f"{routing}:5: receiver 'coop': loft must be a word, got 'n0rth!'"

    # And the sinks deliver through it.
    caplog.set_level(logging.INFO, logger="opsloop.notifications")

    async def deliver() -> list[str]:
        engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
        async with Harness(loaded.receivers, engine, {}) as h:
            return await h.run(make_effect("coop", "pigeon", title="disk full"), timeout=10)

    assert asyncio.run(deliver()) == ["delivered"]
    assert "coo: disk full to north" in caplog.text


def test_without_the_file_the_channel_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text("receivers:\n  - name: coop\n    channel: pigeon\n")
    with pytest.raises(ConfigError) as err:
        load_receivers(path, channels=specs())
    assert str(err.value) == (
        f"{path}:3: receiver 'coop': unknown channel 'pigeon'; expected one of "
        "email, log, pagerduty, remediate, slack, teams, webhook"
    )


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """An empty channels package of its own (discover() takes any package)."""
    name = f"channels_{uuid.uuid4().hex[:8]}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, tmp_path / name
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def channel_module(name: str) -> str:
    return (
        "from agents.sinks.base import Channel, LogRequest\nfrom streams.model.receivers import ChannelSpec\n"
        f"CHANNEL = Channel(name={name!r}, spec=ChannelSpec(), render=lambda e, r, s: LogRequest(line='x'))\n"
    )


def test_discovery_takes_every_module_and_skips_private_ones(package: tuple[str, Path]) -> None:
    name, directory = package
    (directory / "one.py").write_text(channel_module("one"))
    (directory / "two.py").write_text(channel_module("two"))
    (directory / "_helpers.py").write_text("raise RuntimeError('a private helper is not imported by discovery')\n")
    assert list(discover(name)) == ["one", "two"]


def test_a_module_without_a_channel_fails_loudly(package: tuple[str, Path]) -> None:
    name, directory = package
    (directory / "one.py").write_text(channel_module("one"))
    (directory / "notes.py").write_text("SINK = object()\n")
    with pytest.raises(ChannelRegistryError, match=rf"{name}\.notes: .* must define CHANNEL .*got NoneType"):
        discover(name)


def test_a_channel_of_the_wrong_type_fails_loudly(package: tuple[str, Path]) -> None:
    name, directory = package
    (directory / "odd.py").write_text("CHANNEL = {'name': 'odd'}\n")
    with pytest.raises(ChannelRegistryError, match=rf"{name}\.odd: .*got dict"):
        discover(name)


def test_a_duplicate_channel_name_fails_loudly(package: tuple[str, Path]) -> None:
    name, directory = package
    (directory / "first.py").write_text(channel_module("chat"))
    (directory / "second.py").write_text(channel_module("chat"))
    with pytest.raises(
        ChannelRegistryError, match=rf"{name}\.second: channel 'chat' is already defined by {name}\.first"
    ):
        discover(name)


def test_an_import_error_is_never_swallowed(package: tuple[str, Path]) -> None:
    name, directory = package
    (directory / "one.py").write_text(channel_module("one"))
    (directory / "broken.py").write_text("import a_module_that_does_not_exist_anywhere\n")
    with pytest.raises(ModuleNotFoundError, match="a_module_that_does_not_exist_anywhere"):
        discover(name)


def test_an_invalid_channel_object_is_refused_where_it_is_built() -> None:
    with pytest.raises(TypeError, match="spec must be a ChannelSpec"):
        Channel(name="x", spec={"required": ()}, render=lambda e, r, s: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="render must be callable"):
        Channel(name="x", spec=ChannelSpec(), render="not a function")  # type: ignore[arg-type]


# -- layering: streams never imports agents ------------------------------------------

# The routing model and what loads it: the channel specs come in as a parameter.
MODEL = (
    "streams.model.receivers",
    "streams.model.routing",
    "streams.model.runbooks",
    "streams.model.matchers",
    "streams.model.yamlfile",
    "streams.model.silences",
    "streams.cli.runbooks",
    "streams.replay.run",
)
# streams/cli/main.py is the top layer (it asks agents for the channel specs); streams/kafka/app.py starts the
# agents (register_all) until the layer move puts that wiring above streams.
MAY_IMPORT_AGENTS = {"streams/cli/main.py", "streams/kafka/app.py"}


def test_the_routing_model_loads_without_agents() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODEL)
        + "print(sorted(m for m in sys.modules if m == 'agents' or m.startswith('agents.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


def test_no_streams_module_imports_agents() -> None:
    offenders = []
    for path in sorted((ROOT / "streams").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            if any(n == "agents" or n.startswith("agents.") for n in names) and rel not in MAY_IMPORT_AGENTS:
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []
