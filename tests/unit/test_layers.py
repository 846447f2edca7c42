"""The import graph between packages has no cycle, and each layer imports only the layers below it.

Nodes are packages: ``streams`` (its root modules: settings, errors, logs, metrics,
db, progress), ``streams.<sub>`` for each subpackage, ``agents``, ``agents.sinks``,
``agents.sinks.channels`` and ``classifier``. Every import counts, including those
inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What each layer may import (besides itself and the standard library / third parties).
ALLOWED = {
    "streams": set(),
    "streams.model": {"streams"},
    "streams.core": {"streams", "streams.model"},
    "streams.kafka": {"streams", "streams.model"},
    "streams.audit": {"streams", "streams.model", "streams.kafka"},
    "streams.api": {"streams", "streams.model", "streams.kafka", "streams.audit"},
    "streams.ui": {"streams", "streams.model", "streams.kafka", "streams.audit", "streams.api", "streams.core"},
    # ingest answers Alertmanager's reads (amtool silence / alert query) from the audit store, as the read API does
    "streams.ingest": {"streams", "streams.model", "streams.kafka", "streams.core", "streams.audit"},
    "streams.replay.run": {"streams", "streams.model", "streams.core", "streams.kafka", "classifier"},
    # opsloop dev reads the scopes file as ingest does, before giving its token a scope
    "streams.devtools": {"streams", "streams.model", "streams.core", "streams.kafka", "classifier", "streams.ingest"},
    "classifier": {"streams", "streams.model"},
    "agents.sinks": {"streams", "streams.model", "streams.kafka"},
    "agents.sinks.channels": {"streams", "streams.model", "agents.sinks"},
    "agents": {
        "streams",
        "streams.model",
        "streams.core",
        "streams.kafka",
        "classifier",
        "agents.sinks",
        "agents.sinks.channels",
    },
}


def node_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "streams":
        return f"streams.{parts[1]}" if len(parts) > 1 and (ROOT / "streams" / parts[1]).is_dir() else "streams"
    if parts[0] == "agents":
        if parts[1:2] == ["sinks"]:
            return "agents.sinks.channels" if parts[2:3] == ["channels"] else "agents.sinks"
        return "agents"
    return "classifier" if parts[0] == "classifier" else None


def import_graph() -> dict[str, dict[str, list[str]]]:
    """node -> imported node -> where (file:line)."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for package in ("streams", "agents", "classifier"):
        for path in (ROOT / package).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            source = node_of(module)
            for n in ast.walk(ast.parse(path.read_text())):
                if isinstance(n, ast.Import):
                    names = [a.name for a in n.names]
                elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                    names = [n.module] + [f"{n.module}.{a.name}" for a in n.names]
                else:
                    continue
                for name in names:
                    target = node_of(name)
                    if target and target != source:
                        graph[source][target].append(f"{path.relative_to(ROOT)}:{n.lineno}")
    return graph


def test_no_cycle_between_packages():
    graph = import_graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, {}):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in list(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_each_layer_imports_only_the_layers_below_it():
    graph = import_graph()
    wrong = {
        f"{src} -> {dst}": where[:3]
        for src, targets in graph.items()
        for dst, where in targets.items()
        if src in ALLOWED and dst not in ALLOWED[src]
    }
    assert wrong == {}


def test_the_pure_core_imports_no_io_library():
    """decide and its gates read no clock and do no I/O: nothing of Kafka, HTTP, SQL or faust is imported."""
    banned = ("aiokafka", "faust", "aiohttp", "httpx", "sqlalchemy", "psycopg", "asyncio", "socket", "requests")
    found = []
    for path in (ROOT / "streams" / "core").rglob("*.py"):
        for n in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in n.names]
                if isinstance(n, ast.Import)
                else ([n.module] if isinstance(n, ast.ImportFrom) and n.module else [])
            )
            found += [f"{path.relative_to(ROOT)}: {name}" for name in names if name.split(".")[0] in banned]
    assert found == []
