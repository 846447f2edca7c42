"""``opsloop dev``: a local broker, a database, ingest, a worker, the projector and the console, until Ctrl-C.

Unlike the demo, everything is kept in one data directory between runs
(``--data-dir``, default ``.opsloop/dev``): the Kafka log dir (formatted once, resumed
after), a PostgreSQL cluster when the server binaries are installed (else an SQLite
file), the worker's table state and ledger, every process's log, and ``dev.json``
(mode 0600: the ports used last time and the generated ingest token, ack secret, console
token and console cookie key, so URLs, tokens, logins and Acknowledge links stay valid from
one run to the next).

The four opsloop processes are the real commands (``opsloop ingest``, ``opsloop
worker``, ``opsloop projector``, ``opsloop ui``), run as children with the data directory as their
working directory and the environment pointing them at the broker and the database.
Each child, the broker's JVM and the PostgreSQL server run in a session of their own,
so Ctrl-C reaches only this process, which stops them in order (front door first,
broker and database last); the children also die with this process if it is killed
(PR_SET_PDEATHSIG), and a PostgreSQL server a killed run left is stopped on the next
start. Nothing is written outside the data directory (the broker jars are the cache
``opsloop demo`` uses too).

A child or the broker that exits (a crash, a ``kill -9`` to see what a death does) is started
again, as a supervisor would, with one line saying so; one that exits more than
``RESTARTS_PER_MINUTE`` times in a minute (a configuration error) stops everything, with
the end of its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

import httpx

from streams.devtools import childproc
from streams.devtools.broker import LocalKafka, free_port
from streams.devtools.postgres import LocalPostgres, PostgresError, pg_bindir
from streams.devtools.processes import FAST_GROUP_ENV
from streams.errors import EXIT_INTERRUPTED, OpsloopError, UnavailableError
from streams.settings import ROOT, Settings

if TYPE_CHECKING:
    from streams.devtools.demo import LocalReceivers

DEFAULT_DATA_DIR = Path(".opsloop") / "dev"
TOKEN_NAME = "dev"  # the producer name ingest knows the generated token by (OPSLOOP_INGEST_TOKEN_DEV)
UI_USER = "dev"  # the console login name (OPSLOOP_UI_TOKENS); actions are recorded as done by it
PORTS = ("kafka", "kafka_controller", "postgres", "ingest", "worker_web", "console", "projector_metrics", "receivers")
# Chat channels whose webhook URL a local receiver stands in for when its variable is not set (PagerDuty's and
# email's endpoints are fixed by the service: those still need their secrets)
LOCAL_CHANNELS = ("slack", "teams")
READY_TIMEOUT_S = 120.0
RESTARTS_PER_MINUTE = 5

SAMPLE_ALERT = [
    {
        "labels": {
            "alertname": "HostHighCpuLoad",
            "severity": "warning",
            "instance": "dev-host:9100",
            "service": "dev-host",
        },
        "annotations": {"summary": "Host high CPU load (instance dev-host:9100)", "description": "CPU load is > 80%"},
    }
]


class DevError(OpsloopError):
    """``opsloop dev`` cannot run as asked (the data directory is in use, a child did not start)."""


class DevUnavailable(UnavailableError):
    """A process ``opsloop dev`` started did not become ready or exited; the message has its log's tail."""


class _Stop(OpsloopError):
    """Raised from the SIGINT/SIGTERM handler to leave start-up or the wait loop (also checked
    between start-up steps: a broad ``except`` in a readiness probe may swallow the raise)."""

    exit_code = EXIT_INTERRUPTED


@dataclass
class DevState:
    """``dev.json``: what must stay the same from one run to the next."""

    ports: dict[str, int] = field(default_factory=dict)
    token: str = ""
    ack_secret: str = ""
    ui_token: str = ""
    ui_secret: str = ""

    @classmethod
    def load(cls, path: Path) -> DevState:
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        secrets_ = {name: str(raw.get(name, "")) for name in ("token", "ack_secret", "ui_token", "ui_secret")}
        return cls(ports=dict(raw.get("ports", {})), **secrets_)

    def save(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(
                {
                    "ports": self.ports,
                    "token": self.token,
                    "ack_secret": self.ack_secret,
                    "ui_token": self.ui_token,
                    "ui_secret": self.ui_secret,
                },
                out,
                indent=2,
            )

    def settle(self, ingest_port: int | None = None) -> None:
        """Generate what is missing; keep each port of the last run unless something else took it."""
        self.token = self.token or secrets.token_urlsafe(24)
        self.ack_secret = self.ack_secret or secrets.token_urlsafe(32)
        self.ui_token = self.ui_token or secrets.token_urlsafe(24)
        self.ui_secret = self.ui_secret or secrets.token_urlsafe(32)
        if ingest_port:
            self.ports["ingest"] = ingest_port
        for name in PORTS:
            port = self.ports.get(name)
            if not port or (not port_free(port) and not (name == "ingest" and ingest_port)):
                self.ports[name] = free_port()


def port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now. With SO_REUSEADDR, as the servers bind (aiohttp, Kafka, PostgreSQL):
    the connections a stopped server leaves in TIME_WAIT do not hold the port, and without it a restart of
    ``opsloop dev`` under traffic moved every port, so Prometheus and the banner's curl met a closed one."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """One ``opsloop dev`` per data directory (a second would format over the first's broker)."""
    with open(data_dir / "dev.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DevError(f"another opsloop dev is running with the data directory {data_dir}") from None
        yield


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` of a log ("" when there is none yet)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class _Process:
    """A watched child whose process's exit code says how it ended."""

    @property
    def exit_code(self) -> int | None:
        raise NotImplementedError

    def ended(self) -> str | None:
        """How it ended (``signal SIGKILL``), or None while it runs."""
        code = self.exit_code
        return None if code is None else describe_exit(code)


class Child(_Process):
    """One ``opsloop <command>`` process, its log in the data directory."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], cwd: Path, log: Path) -> None:
        self.name, self.args, self.env, self.cwd, self.log_path = name, args, dict(env), cwd, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        with open(self.log_path, "ab") as log:
            self.proc = childproc.spawn(
                [sys.executable, "-m", "streams.cli.main", *self.args],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def tail(self, lines: int = 25) -> str:
        return log_tail(self.log_path, lines)

    def wait_http(self, url: str, timeout: float) -> None:
        """Poll ``url`` until it answers 200, the process exits, or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exit_code is not None:
                raise DevUnavailable(f"{self.name} exited with {self.exit_code}; its log ends:\n{self.tail()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise DevUnavailable(f"{self.name} did not answer {url} within {timeout:.0f}s; its log ends:\n{self.tail()}")

    def stop(self) -> int | None:
        code = childproc.stop(self.proc, 30)
        self.proc = None
        return code

    def restart(self) -> Child:
        """Start it again after it exited (reaped; its log goes on in the same file)."""
        if self.proc is not None:
            self.proc.wait()
        return self.start()


class BrokerChild(_Process):
    """The local broker seen as a child: ``opsloop dev`` starts it again (same port, same log dir) if it ends."""

    name = "kafka"

    def __init__(self, broker: LocalKafka) -> None:
        self.broker = broker
        self.log_path = broker.log_file

    @property
    def exit_code(self) -> int | None:
        proc = self.broker.proc
        return None if proc is None else proc.poll()

    def tail(self, lines: int = 25) -> str:
        return self.broker.tail(lines)

    def restart(self) -> BrokerChild:
        self.broker.proc = None  # reaped by poll(); start() resumes the formatted log dir
        self.broker.start()
        return self


class PostgresChild:
    """The local PostgreSQL server seen as a child: started again (same cluster, same port) if it ends."""

    name = "postgres"

    def __init__(self, postgres: LocalPostgres) -> None:
        self.postgres = postgres
        self.log_path = postgres.log_file

    def ended(self) -> str | None:
        return None if self.postgres.server_pid() is not None else "its server process is gone"

    def tail(self, lines: int = 25) -> str:
        return log_tail(self.log_path, lines)

    def restart(self) -> PostgresChild:
        self.postgres.start()  # a stale postmaster.pid is cleared first; the server recovers the cluster
        return self


Watched = Child | BrokerChild | PostgresChild


def describe_exit(code: int) -> str:
    """``exit code 1`` or ``signal SIGKILL``, as a person reads a process's end."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


# The dev token may also silence and read back, as the one operator of this machine: amtool works with it.
DEV_SCOPE = {"orgs": ["*"], "control": True, "operator": True}


def dev_token_scope(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """``OPSLOOP_INGEST_SCOPES`` giving the dev token :data:`DEV_SCOPE`, unless the scopes are the user's
    (the variable is set, or the scopes file names the dev producer): then nothing is added."""
    from streams.ingest.scopes import load_scopes

    if environ.get("OPSLOOP_INGEST_SCOPES", "").strip():
        return {}
    path = settings.ingest.scopes_file or Path(settings.runbooks_dir) / "ingest-scopes.yaml"
    if TOKEN_NAME in load_scopes(path, ""):
        return {}
    return {"OPSLOOP_INGEST_SCOPES": json.dumps({TOKEN_NAME: DEV_SCOPE})}


def write_amtool_config(path: Path, token: str) -> None:
    """amtool's ``--http.config.file`` with the dev token (mode 0600, as ``dev.json``)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"authorization:\n  type: Bearer\n  credentials: {token}\n")


def sample_curl(ingest_url: str, token: str) -> str:
    body = json.dumps(SAMPLE_ALERT, separators=(",", ":"))
    return shlex.join(
        [
            "curl",
            "-sS",
            "-X",
            "POST",
            f"{ingest_url}/api/v2/alerts",
            "-H",
            f"Authorization: Bearer {token}",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
        ]
    )


class Dev:
    def __init__(self, data_dir: Path, *, sqlite: bool = False, ingest_port: int | None = None, out: IO[str]) -> None:
        self.data_dir = data_dir.resolve()
        self.use_sqlite = sqlite
        self.ingest_port = ingest_port
        self.out = out
        self.state = DevState()
        self.broker: LocalKafka | None = None
        self.postgres: LocalPostgres | None = None
        self.receivers: LocalReceivers | None = None  # Slack and Teams stand-ins (local_chat)
        self.chat: tuple[list[str], Path] | None = None
        self.children: list[Child] = []
        self.signalled = ""  # the signal's name once SIGINT / SIGTERM arrived

    def checkpoint(self) -> None:
        if self.signalled:
            raise _Stop(self.signalled)

    def say(self, line: str = "") -> None:
        print(line, file=self.out, flush=True)

    # -- start-up --------------------------------------------------------------------

    def start_database(self) -> tuple[str, str]:
        """(DATABASE_URL, a description): PostgreSQL in the data dir when installed, else SQLite there."""
        sqlite_url = f"sqlite:///{self.data_dir / 'opsloop.db'}"
        if self.use_sqlite:
            return sqlite_url, f"SQLite {self.data_dir / 'opsloop.db'} (--sqlite)"
        bindir = pg_bindir()
        if bindir is None:
            return sqlite_url, f"SQLite {self.data_dir / 'opsloop.db'} (no PostgreSQL server binaries found)"
        self.say("starting PostgreSQL ...")
        pg = LocalPostgres(self.data_dir / "postgres", self.state.ports["postgres"], bindir)
        try:
            self.postgres = pg
            pg.start()
        except PostgresError as exc:
            self.postgres = None
            pg.stop()
            self.say(f"PostgreSQL not started ({exc}); using SQLite")
            return sqlite_url, f"SQLite {self.data_dir / 'opsloop.db'}"
        return pg.url, f"PostgreSQL {bindir.parent.name} at 127.0.0.1:{pg.port} (log {pg.log_file})"

    def local_chat(self, settings: Settings) -> dict[str, str]:
        """Slack and Teams receivers whose webhook variable is not set, pointed at a local receiver that logs each
        message to ``logs/messages.log``: without it every notification of ``opsloop dev`` was dead-lettered
        ("OPSLOOP_SLACK_INFRA_WEBHOOK ... is not set"), 194 in a probe, and nothing showed what would be sent."""
        from streams.devtools.demo import LocalReceivers
        from streams.model.yamlfile import load_yaml

        routing = Path(settings.runbooks_dir) / "routing.yaml"
        doc = load_yaml(routing) if routing.exists() else {}
        env: dict[str, str] = {}
        for receiver in (doc or {}).get("receivers") or []:
            channel, secrets_ = receiver.get("channel"), receiver.get("secrets") or {}
            variable = secrets_.get("webhook_url") if isinstance(secrets_, dict) else None
            if channel in LOCAL_CHANNELS and isinstance(variable, str) and not os.environ.get(variable):
                env[variable] = f"http://127.0.0.1:{self.state.ports['receivers']}/{channel}/{receiver.get('name')}"
        if env:
            log = self.data_dir / "logs" / "messages.log"
            self.receivers = LocalReceivers(self.state.ports["receivers"], log).start()
            self.chat = sorted(env), log
        return env

    def child_env(self, bootstrap: str, database_url: str) -> dict[str, str]:
        ingest_url = f"http://127.0.0.1:{self.state.ports['ingest']}"
        pythonpath = os.environ.get("PYTHONPATH", "")
        return {
            **os.environ,
            **FAST_GROUP_ENV,  # a worker restarted after a crash rejoins in seconds
            # The children import this opsloop, whatever their working directory (the data dir).
            "PYTHONPATH": f"{ROOT}{os.pathsep}{pythonpath}" if pythonpath else str(ROOT),
            "KAFKA_BOOTSTRAP": bootstrap,
            "DATABASE_URL": database_url,
            "OPSLOOP_ACK_BASE_URL": f"{ingest_url}/ingest/ack",
            "OPSLOOP_ACK_SECRET": self.state.ack_secret,
        }

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        state_file = self.data_dir / "dev.json"
        self.state = DevState.load(state_file)
        self.state.settle(self.ingest_port)
        self.state.save(state_file)
        ports = self.state.ports

        self.say(f"opsloop dev: data in {self.data_dir}")
        self.say("starting the Kafka broker (KRaft) ...")
        self.broker = LocalKafka(
            self.data_dir / "kafka", port=ports["kafka"], controller_port=ports["kafka_controller"], new_session=True
        )
        self.broker.start()
        self.checkpoint()
        bootstrap = self.broker.bootstrap
        database_url, database = self.start_database()
        self.checkpoint()

        from streams.kafka.admin import apply, render
        from streams.kafka.catalogue import load_catalogue

        settings = Settings.from_env(kafka_bootstrap=bootstrap)
        for line in render(asyncio.run(apply(settings, load_catalogue(settings.topics_file)))).splitlines():
            self.say(f"topics: {line}")

        env = self.child_env(bootstrap, database_url)
        logs = self.data_dir / "logs"
        ingest_env = {
            **env,
            f"OPSLOOP_INGEST_TOKEN_{TOKEN_NAME.upper()}": self.state.token,
            **dev_token_scope(settings, os.environ),
        }
        amtool_config = self.data_dir / "amtool.yml"
        write_amtool_config(amtool_config, self.state.token)
        worker_env = {
            **env,
            **self.local_chat(settings),
            "OPSLOOP_DATA_DIR": str(self.data_dir / "worker"),
            "OPSLOOP_WEB_HOST": "127.0.0.1",
            "OPSLOOP_WEB_PORT": str(ports["worker_web"]),
        }
        if database_url.startswith("sqlite"):  # the ledger apart from the projector's tables: one writer per file
            worker_env["OPSLOOP_SINK_DATABASE_URL"] = f"sqlite:///{self.data_dir / 'worker' / 'ledger.db'}"
            worker_env["OPSLOOP_SINK_SINGLE_NODE"] = "true"  # one worker by construction (see README: the ledger)
        ingest = Child(
            "ingest",
            ["ingest", "--host", "127.0.0.1", "--port", str(ports["ingest"])],
            ingest_env,
            self.data_dir,
            logs / "ingest.log",
        )
        worker = Child("worker", ["worker"], worker_env, self.data_dir, logs / "worker.log")
        projector_metrics = self.state.ports["projector_metrics"]
        projector = Child(
            "projector",
            ["projector", "--metrics-port", str(projector_metrics)],
            env,
            self.data_dir,
            logs / "projector.log",
        )
        console_env = {
            **env,
            "OPSLOOP_UI_TOKENS": f"{UI_USER}={self.state.ui_token}",
            "OPSLOOP_UI_SECRET": self.state.ui_secret,
            "OPSLOOP_UI_REFRESH_S": "5",
        }
        console = Child(
            "console",
            ["ui", "--host", "127.0.0.1", "--port", str(ports["console"])],
            console_env,
            self.data_dir,
            logs / "console.log",
        )
        self.children = [ingest, console, worker, projector]
        self.say("starting ingest, the console, a worker and the projector ...")
        for child in self.children:
            self.checkpoint()
            child.start()
        ingest_url = f"http://127.0.0.1:{ports['ingest']}"
        worker_url = f"http://127.0.0.1:{ports['worker_web']}"
        ingest.wait_http(f"{ingest_url}/readyz", READY_TIMEOUT_S)
        self.checkpoint()
        worker.wait_http(f"{worker_url}/metrics", READY_TIMEOUT_S)
        self.checkpoint()
        console_url = f"http://127.0.0.1:{ports['console']}"
        console.wait_http(f"{console_url}/healthz", READY_TIMEOUT_S)
        self.checkpoint()
        if projector.exit_code is not None:
            raise DevUnavailable(f"projector exited with {projector.exit_code}; its log ends:\n{projector.tail()}")

        tools_env = f"KAFKA_BOOTSTRAP={bootstrap} DATABASE_URL={shlex.quote(database_url)}"
        self.say()
        self.say("opsloop dev is running; Ctrl-C stops everything.")
        self.say(f"  kafka      {bootstrap}")
        self.say(f"  database   {database}")
        self.say(f"  ingest     {ingest_url}  (log {ingest.log_path})")
        self.say(f"  worker     {worker_url}/metrics  (log {worker.log_path})")
        self.say(
            f"  projector  http://127.0.0.1:{projector_metrics}/metrics, audit tables in the database above"
            f"  (log {projector.log_path})"
        )
        self.say(f"  console    {console_url}/  (log {console.log_path})")
        self.say(f"             log in as '{UI_USER}' with the token {self.state.ui_token}")
        self.say(f"  ack links  {ingest_url}/ingest/ack")
        if self.chat is not None:
            variables, log = self.chat
            self.say(f"  messages   {log}: what {', '.join(variables)} would have received")
            self.say("             (a local receiver stands in while they are not set)")
        self.say(f"  token      producer '{TOKEN_NAME}', kept in {state_file}")
        self.say()
        self.say("fire an alert:")
        self.say(f"  {sample_curl(ingest_url, self.state.token)}")
        self.say(f"then watch it in the console ({console_url}/), or:")
        self.say(f"  {tools_env} opsloop tail decisions outbox")
        self.say(f"  {tools_env} opsloop audit default:alert:HostHighCpuLoad:dev-host")
        self.say("or with Alertmanager's amtool (silence add / query / expire, alert query):")
        self.say(f"  amtool --alertmanager.url={ingest_url} --http.config.file={amtool_config} alert query")
        self.say()

    # -- running and stopping ---------------------------------------------------------

    def wait(self) -> tuple[Watched, str] | None:
        """Until a signal (None) or a child ends too often to restart (that child, and how it ended last);
        each other end is a restart. The broker and the database are watched first: the others reconnect."""
        exits: dict[str, list[float]] = {}
        watched: list[Watched] = [*self.children]
        if self.postgres is not None:
            watched.insert(0, PostgresChild(self.postgres))
        if self.broker is not None:
            watched.insert(0, BrokerChild(self.broker))
        while not self.signalled:
            for child in watched:
                how = child.ended()
                if how is None:
                    continue
                now = time.monotonic()
                exits[child.name] = [t for t in exits.get(child.name, []) if now - t < 60.0] + [now]
                if len(exits[child.name]) > RESTARTS_PER_MINUTE:
                    return child, how
                try:
                    child.restart()
                except _Stop:
                    raise
                except (OSError, UnavailableError) as exc:  # counted as another end: tried again, then given up on
                    self.say(f"opsloop dev: {child.name} ended ({how}) and could not be started again: {exc}")
                    continue
                self.say(f"opsloop dev: {child.name} ended ({how}); started again (log {child.log_path})")
            time.sleep(0.5)
        return None

    def stop(self) -> None:
        for child in self.children:  # the front door first, then the worker and the projector
            child.stop()
        self.children = []
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        if self.receivers is not None:
            self.receivers.stop()
            self.receivers = None


def run_dev(
    data_dir: Path = DEFAULT_DATA_DIR,
    *,
    sqlite: bool = False,
    ingest_port: int | None = None,
    out: IO[str] = sys.stdout,
) -> int:
    dev = Dev(Path(data_dir), sqlite=sqlite, ingest_port=ingest_port, out=out)
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not dev.signalled:
            dev.signalled = signal.Signals(signum).name
        if not stopping:  # once shutting down, signals are noted and nothing is cut short
            raise _Stop(dev.signalled)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        dev.data_dir.mkdir(parents=True, exist_ok=True)
        with data_dir_lock(dev.data_dir):
            try:
                dev.start()
                ended = dev.wait()
                if ended is None:
                    dev.say(f"\n{dev.signalled}: stopping ...")
                else:
                    exited, how = ended
                    print(
                        f"opsloop dev: {exited.name} ended more than {RESTARTS_PER_MINUTE} times in a minute (last: "
                        f"{how}); stopping everything. Its log ends:\n{exited.tail()}",
                        file=sys.stderr,
                    )
                    code = DevUnavailable.exit_code
            except _Stop as stop:
                dev.say(f"\n{stop}: stopping ...")
            finally:
                stopping = True  # a second Ctrl-C must not cut the shutdown short
                dev.stop()
                dev.say("opsloop dev: stopped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
