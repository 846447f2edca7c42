"""Group commit: ledger calls that arrive while one batch is in the database go together in the next.

Each delivery still claims before it sends and completes after (the ledger's order is
unchanged); what changes is how many deliveries share a transaction. Nothing waits to
fill a batch: a lone claim runs at once, and under a storm the claims that queued behind
the running one (up to ``max_batch``) share the next commit, so the number of
transactions follows the database's speed, not the number of effects. ``linger_s`` lets a
batch wait that long for company first: for calls nobody waits on in line (the sinks'
deferred completions), where a few milliseconds cost no throughput.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Req = TypeVar("Req")
Res = TypeVar("Res")


class GroupCommit(Generic[Req, Res]):
    """``await batcher(request)`` → its result; ``run`` takes a list of requests and returns their results in
    order (or raises, which every request of that batch gets)."""

    def __init__(
        self, run: Callable[[list[Req]], Awaitable[Sequence[Res]]], max_batch: int = 500, linger_s: float = 0.0
    ) -> None:
        self._run = run
        self.max_batch = max_batch
        self.linger_s = linger_s
        self._pending: list[tuple[Req, asyncio.Future[Res]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # how many batches ran (for tests and the bench)

    async def __call__(self, request: Req) -> Res:
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="sink:ledger-batch")
        return await future

    async def _drain(self) -> None:
        if self.linger_s > 0:
            await asyncio.sleep(self.linger_s)
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            self.batches += 1
            try:
                results = await self._run([request for request, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - every caller of this batch gets it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for _, future in self._pending:
            future.cancel()
        self._pending = []
