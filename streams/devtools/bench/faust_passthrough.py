"""L3: a plain faust-streaming app whose one agent forwards each record's bytes (run as a child process).

``python -m streams.devtools.bench.faust_passthrough`` with ``BENCH_BOOTSTRAP``,
``BENCH_APP_ID``, ``BENCH_SOURCE``, ``BENCH_SINK`` and ``BENCH_DATA_DIR`` set. No tables, no
codec, no opsloop code in the path: L3 / L1 is what faust's consumer, stream and
producer machinery costs per record, and L4 / L3 what opsloop adds on top of faust.
Only faust's terminal spinner is dropped (as ``agents.worker.QuietWorker`` does): at
WARNING it turns the root logger to DEBUG, a logging cost, not a streaming one.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import faust


class _Worker(faust.Worker):
    """faust.Worker without the spinner (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spinner = None

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        if level:
            logger.setLevel(level)


def build_app(bootstrap: str, app_id: str, source: str, sink: str, data_dir: str) -> faust.App:
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        datadir=data_dir,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=0.5,
        broker_commit_interval=0.5,
    )
    src = app.topic(source, key_serializer="raw", value_serializer="raw")
    out = app.topic(sink, key_serializer="raw", value_serializer="raw")

    @app.agent(src, name="forward")
    async def forward(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            await out.send(key=event.key, value=event.value)

    return app


def main() -> None:
    env = os.environ
    app = build_app(
        env["BENCH_BOOTSTRAP"], env["BENCH_APP_ID"], env["BENCH_SOURCE"], env["BENCH_SINK"], env["BENCH_DATA_DIR"]
    )
    _Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
