"""A single-node Apache Kafka broker (KRaft) run from the official jars.

The demo and the test suite both need a real broker on a machine without Docker.
Kafka's own scripts are thin wrappers over two main classes in the kafka_2.13 jar
(``kafka.tools.StorageTool`` formats, ``kafka.Kafka`` serves), so this module does
what they do: fetch the jars from Maven Central once (``deploy/kafka/pom.xml``),
format a fresh log dir, start the JVM on free loopback ports and wait until the
broker answers a metadata request. The JVM is tied to this process with
PR_SET_PDEATHSIG, so a killed test run or demo leaves no broker behind.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from streams.devtools import childproc
from streams.errors import UnavailableError
from streams.settings import ROOT

POM = ROOT / "deploy" / "kafka" / "pom.xml"


class BrokerError(UnavailableError):
    """The local broker could not be fetched, formatted or started; the message says which."""


def kafka_version() -> str:
    text = POM.read_text()
    start = text.index("<kafka.version>") + len("<kafka.version>")
    return text[start : text.index("</kafka.version>", start)]


def libs_dir() -> Path:
    """Where the broker jars live: $OPSLOOP_KAFKA_LIBS or ~/.cache/opsloop/kafka-<version>."""
    override = os.environ.get("OPSLOOP_KAFKA_LIBS")
    if override:
        return Path(override)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "opsloop" / f"kafka-{kafka_version()}"


def fetch_jars(quiet: bool = True) -> Path:
    """Copy kafka_2.13 and its runtime dependencies from Maven Central into :func:`libs_dir`."""
    target = libs_dir()
    marker = target / ".complete"
    if marker.exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is not installed; it fetches the Kafka jars from Maven Central")
    target.mkdir(parents=True, exist_ok=True)
    cmd = [
        mvn,
        "-B",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={target}",
    ]
    if quiet:
        cmd.insert(1, "-q")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BrokerError(
            f"fetching the Kafka jars failed (mvn exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    if not any(target.glob("kafka_2.13-*.jar")):
        raise BrokerError(f"mvn finished but no kafka_2.13 jar is in {target}")
    marker.write_text(kafka_version())
    return target


def new_cluster_id(draw: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id as Kafka's ``Uuid.randomUuid`` makes them: URL-safe base64 of
    16 random bytes, drawn again when it would start with "-" (argument parsers, the
    storage tool's among them, read such a value as an option: 1 start in 16 failed)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(draw()).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
"""


class LocalKafka:
    """One KRaft broker+controller process. ``start()`` returns when it serves metadata."""

    def __init__(
        self,
        workdir: Path | None = None,
        heap: str = "512m",
        log_level: str = "WARN",
        *,
        port: int | None = None,
        controller_port: int | None = None,
        new_session: bool = False,
    ) -> None:
        """``workdir`` kept by the caller is resumed when it holds a formatted log dir (``opsloop dev``
        passes the ports it used before: the KRaft voter set stores the controller's endpoint);
        ``new_session`` keeps the JVM out of the terminal's process group (Ctrl-C reaches only the caller)."""
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="opsloop-kafka-"))
        self._owns_workdir = workdir is None
        self.heap = heap
        self.log_level = log_level
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.new_session = new_session
        self.proc: subprocess.Popen[bytes] | None = None
        self._formatted = (self.workdir / "data" / "meta.properties").exists()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "server.log"

    def _classpath(self) -> str:
        return f"{fetch_jars()}/*"

    def _write_config(self) -> Path:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.flush.interval.messages": "9223372036854775807",
        }
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.workdir / "log4j2.properties").write_text(LOG4J2.format(log=self.log_file, level=self.log_level))
        return path

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            "-XX:-UsePerfData",  # no /tmp/hsperfdata_<user>/<pid> file
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            self._classpath(),
            main,
            *args,
        ]

    def format(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        proc = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={new_cluster_id()}",
                "-c",
                str(config),
                "--standalone",
            ),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
        self._formatted = True

    def start(self, timeout: float = 90.0) -> LocalKafka:
        """Start (formatting on first start) and wait until a metadata request succeeds."""
        if shutil.which("java") is None:
            raise BrokerError("java is not installed; the local Kafka broker needs a JRE 17+")
        if not self._formatted:
            self.format()
        else:
            self._write_config()
        out = open(self.workdir / "stdout.log", "ab")
        self.proc = childproc.spawn(
            self._java("kafka.Kafka", str(self.workdir / "server.properties")),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=self.new_session,
        )
        out.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise BrokerError(
                    f"the Kafka broker exited with {self.proc.returncode}; see {self.workdir}/stdout.log:\n{self.tail()}"
                )
            try:
                asyncio.run(_metadata_probe(self.bootstrap))
                return
            except Exception as exc:  # not up yet: connection refused, no controller, ...
                last = exc
                time.sleep(0.2)
        raise BrokerError(
            f"the Kafka broker did not answer within {timeout:.0f}s (last error: {last!r}):\n{self.tail()}"
        )

    def tail(self, lines: int = 30) -> str:
        chunks = []
        for name in ("stdout.log", "server.log"):
            path = self.workdir / name
            if path.exists():
                chunks.append("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(chunks)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop gracefully (SIGTERM), killing it if it does not exit in time."""
        childproc.stop(self.proc, timeout)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, for fault tests: the data dir stays, ``start()`` resumes it."""
        childproc.kill(self.proc)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _metadata_probe(bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # "connection refused" is the expected answer until it is up
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        info = await admin.describe_cluster()
        if not info.get("brokers"):
            raise BrokerError("no brokers in metadata yet")
    finally:
        await admin.close()
        quiet.setLevel(level)
