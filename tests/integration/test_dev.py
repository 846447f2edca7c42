"""``opsloop dev``: the printed curl fires an alert that is decided, projected and shown in the console
(logged in with the printed token); a worker and a broker killed with SIGKILL are started again; Ctrl-C leaves nothing.

Run twice on one data directory: the second run resumes the broker's log dir and
the database (the first run's decision is still in the audit tables, the topics
are already there) rather than starting over.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
READY = "opsloop dev is running"


@pytest.fixture
def home() -> Iterator[Path]:
    # Under /tmp with o+x rather than pytest's tmp_path (mode 0700 under root): the PostgreSQL
    # server runs as the postgres user there and must reach the data directory.
    path = Path(tempfile.mkdtemp(prefix="opsloop-devtest-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _listing(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def _descendants(pid: int) -> set[int]:
    """Every live process whose parent chain leads to ``pid`` (sessions of their own included)."""
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            parents[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{proc.name}: {cmdline[:200]}")
    return found


class DevRun:
    def __init__(self, cwd: Path, tmpdir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSLOOP_", "KAFKA_BOOTSTRAP", "DATABASE_URL"))}
        env.update({"PYTHONPATH": str(ROOT), "TMPDIR": str(tmpdir)})
        self.logs = cwd / ".opsloop" / "dev" / "logs"
        self.out_path = cwd.parent / f"dev-{time.monotonic_ns()}.out"
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli.main", "dev"],
            cwd=cwd,
            env=env,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def text(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 240.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if READY in text and "then watch it" in text and text.rstrip().endswith("alert query"):
                return text
            assert self.proc.poll() is None, f"opsloop dev exited with {self.proc.returncode}:\n{text[-4000:]}"
            time.sleep(0.2)
        raise AssertionError(f"opsloop dev not ready within {timeout:.0f}s:\n{self.text()[-4000:]}")

    def diagnosis(self) -> str:
        """What a failed step needs beside its own error: dev's output and the end of each child's log."""
        parts = [f"opsloop dev (exit code {self.proc.poll()}) printed:\n{self.text()[-3000:]}"]
        for log in sorted(self.logs.glob("*.log")):
            parts.append(f"--- {log.name} ends:\n{log.read_text(errors='replace')[-2000:]}")
        return "\n".join(parts)

    def interrupt(self) -> tuple[int, set[int]]:
        children = _descendants(self.proc.pid)
        assert children, "opsloop dev has no child processes while running"
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(90)
        self.out.close()
        return code, children


def _child_pid(dev_pid: int, tail: list[bytes]) -> int:
    """The child of a running ``opsloop dev`` whose command line ends with ``tail``."""
    for pid in _alive(_descendants(dev_pid)):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if argv[-len(tail) :] == tail:
            return pid
    raise AssertionError(f"opsloop dev has no process ending {tail}")


def _worker_pid(dev_pid: int) -> int:
    return _child_pid(dev_pid, [b"streams.cli.main", b"worker"])


def _broker_pid(dev_pid: int) -> int:
    return next(
        pid
        for pid in _alive(_descendants(dev_pid))
        if b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    )


def _post_until_accepted(text: str, timeout: float) -> list[str]:
    """The printed curl, posted again while ingest answers 503 (Kafka restarting: "retry later")."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _post_printed_curl(text)
        except AssertionError as refused:
            if "retry later" not in str(refused) or time.monotonic() > deadline:  # only ingest's 503 is waited out
                raise
            time.sleep(0.5)


def _post_printed_curl(text: str, body: str | None = None) -> list[str]:
    """The banner's curl (``body``: another post to the same address with the same token)."""
    line = next(line.strip() for line in text.splitlines() if line.strip().startswith("curl "))
    words = shlex.split(line)
    url = next(w for w in words if w.startswith("http"))
    headers = dict(words[i + 1].split(": ", 1) for i, w in enumerate(words) if w == "-H")
    body = body if body is not None else words[words.index("-d") + 1]
    answer = httpx.post(url, headers=headers, content=body, timeout=10)
    assert answer.status_code == 200, answer.text
    ids: list[str] = answer.json()["event_ids"]
    return ids


def _printed_amtool(text: str, *args: str) -> subprocess.CompletedProcess:
    """The banner's amtool line, run with ``args`` instead of its ``alert query``."""
    line = next(line.strip() for line in text.splitlines() if line.strip().startswith("amtool "))
    words = shlex.split(line)
    assert words[-2:] == ["alert", "query"], line
    return subprocess.run([*words[:-2], *args], capture_output=True, text=True, timeout=30)


def _database_url(text: str) -> str:
    return re.search(r"DATABASE_URL=(\S+)", text).group(1).strip("'")


def _decisions_for(url: str, event_ids: list[str], timeout: float) -> list[tuple[str, str]]:
    engine = sa.create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                with engine.connect() as conn:
                    rows = conn.execute(
                        sa.text("SELECT event_id, outcome FROM audit_decisions WHERE event_id IN :ids").bindparams(
                            sa.bindparam("ids", expanding=True)
                        ),
                        {"ids": event_ids},
                    ).all()
                if rows:
                    return [tuple(r) for r in rows]
            except sa.exc.OperationalError:  # tables not created yet
                pass
            time.sleep(0.3)
        return []
    finally:
        engine.dispose()


class Console:
    """The printed console, logged in with the printed token (as a person following the banner would)."""

    def __init__(self, text: str) -> None:
        url = re.search(r"console\s+(http://\S+?)/?\s", text).group(1)
        token = re.search(r"log in as 'dev' with the token (\S+)", text).group(1)
        self.client = httpx.Client(base_url=url, timeout=10)
        form = self.client.get("/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        assert self.client.post("/login", data={"csrf": csrf, "next": "/", "token": token}).status_code == 303

    def firing(self) -> str:
        page = self.client.get("/", params={"status": "firing"})
        assert page.status_code == 200, page.text[:500]
        return page.text

    def seconds_until_shown(self, needle: str, timeout: float) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if needle in self.firing():
                return time.monotonic() - start
            time.sleep(0.3)
        raise AssertionError(f"{needle} not on the console's incidents page within {timeout:.0f}s")


def test_dev_runs_the_loop_resumes_its_data_and_leaves_nothing_behind(home):
    cwd, tmpdir = home / "cwd", home / "tmp"
    cwd.mkdir()
    tmpdir.mkdir()
    before_cwd, before_home = _listing(cwd), sorted(p.name for p in home.iterdir())

    first = DevRun(cwd, tmpdir)
    try:
        text = first.wait_ready()
        assert "created events.telemetry" in text
        try:
            console = Console(text)
            assert "HostHighCpuLoad" not in console.firing()  # nothing fired yet
            event_ids = _post_printed_curl(text)
            shown_after = console.seconds_until_shown("HostHighCpuLoad", timeout=60)
        except (AssertionError, httpx.HTTPError) as exc:
            raise AssertionError(f"{exc!r}\n{first.diagnosis()}") from exc
        print(f"the alert was on the console's incidents page {shown_after:.1f} s after the curl")
        # the starter Slack receivers have no webhook variable here: a local receiver stands in and logs each
        # message (every notification was dead-lettered); an alert firing for 5 minutes is told at once
        messages = re.search(r"messages\s+(\S+/messages\.log):", text).group(1)
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 300))
        old = [
            {"labels": {"alertname": "DevLocalChat", "service": "chat-1", "severity": "warning"}, "startsAt": started}
        ]
        _post_printed_curl(text, json.dumps(old))
        deadline = time.monotonic() + 60
        while "DevLocalChat" not in (Path(messages).read_text() if Path(messages).exists() else ""):
            assert time.monotonic() < deadline, first.diagnosis()
            time.sleep(0.5)
        assert "slack:infra-slack [WARNING] DevLocalChat" in Path(messages).read_text()
        url = _database_url(text)
        decided = _decisions_for(url, event_ids, timeout=90)
        assert decided and decided[0][0] == event_ids[0], first.text()[-3000:]
        # the printed amtool line works as it stands: the dev token may silence, and read back
        added = _printed_amtool(text, "silence", "add", "service=dev-host", "--duration=1h", "--comment=dev")
        assert added.returncode == 0, added.stderr
        deadline = time.monotonic() + 30  # listed once the projector has stored it
        while added.stdout.strip() not in (listed := _printed_amtool(text, "silence", "query", "-q")).stdout:
            assert time.monotonic() < deadline, listed.stderr + first.diagnosis()
            time.sleep(0.5)
        assert "HostHighCpuLoad" in _printed_amtool(text, "alert", "query", "--silenced").stdout
        # the printed projector metrics answer as Prometheus scrapes them
        metrics = httpx.get(re.search(r"projector\s+(http://\S+/metrics)", text).group(1), timeout=10)
        assert metrics.status_code == 200 and "opsloop_dead_letters_total" in metrics.text
        code, children = first.interrupt()
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
    assert code == 0, first.text()[-3000:]
    assert _alive(children) == set(), _processes_mentioning(str(cwd))
    assert _processes_mentioning(str(cwd)) == []
    assert "opsloop dev: stopped" in first.text()

    data_dir = cwd / ".opsloop" / "dev"
    new_in_cwd = {p.split("/", 1)[0] for p in _listing(cwd) - before_cwd}
    assert new_in_cwd == {".opsloop"}, new_in_cwd  # everything under the data dir
    assert {"dev.json", "kafka", "logs", "worker"} <= {p.name for p in data_dir.iterdir()}
    assert (data_dir / "logs" / "console.log").exists()
    assert list(tmpdir.iterdir()) == []
    assert sorted(p.name for p in home.iterdir()) == sorted([*before_home, first.out_path.name])
    assert oct(data_dir.joinpath("dev.json").stat().st_mode & 0o777) == "0o600"
    assert oct(data_dir.joinpath("amtool.yml").stat().st_mode & 0o777) == "0o600"

    second = DevRun(cwd, tmpdir)
    try:
        text = second.wait_ready()
        assert "created events.telemetry" not in text
        assert "no change: " in text  # the same broker log dir
        assert _decisions_for(_database_url(text), event_ids, timeout=30) == decided  # the same database
        # kill -9 the worker and the broker: dev starts both again, and the next alert is decided
        worker, broker = _worker_pid(second.proc.pid), _broker_pid(second.proc.pid)
        os.kill(worker, signal.SIGKILL)
        os.kill(broker, signal.SIGKILL)
        restarted = [
            f"opsloop dev: worker ended (signal SIGKILL); started again (log {second.logs / 'worker.log'})",
            "opsloop dev: kafka ended (signal SIGKILL); started again (log ",
        ]
        deadline = time.monotonic() + 120
        while not all(line in second.text() for line in restarted) and time.monotonic() < deadline:
            assert second.proc.poll() is None, second.diagnosis()
            time.sleep(0.2)
        assert all(line in second.text() for line in restarted), second.diagnosis()
        assert _worker_pid(second.proc.pid) != worker and _broker_pid(second.proc.pid) != broker
        after_kill = _post_until_accepted(text, timeout=60)
        assert _decisions_for(_database_url(text), after_kill, timeout=90), second.diagnosis()
        code, children = second.interrupt()
    finally:
        if second.proc.poll() is None:
            second.proc.kill()
    assert code == 0, second.text()[-3000:]
    assert _alive(children) == set()
    assert _processes_mentioning(str(cwd)) == []
