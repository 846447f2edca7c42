"""One destination down does not delay the others: measured (printed) and checked structurally."""

from __future__ import annotations

from tests.sinks.bench_isolation import measure, render
from tests.sinks.fakes import FakeServices

N = 20


def test_one_destination_down_does_not_delay_the_others(fakes: FakeServices, capsys) -> None:
    results = measure(fakes, N)
    with capsys.disabled():
        print("\n" + render(results, N, 0))
    # Every healthy delivery settled while the hung destination had not finished even its first
    # effects (each takes a read timeout, a pause and a second timeout): they never waited on it.
    assert results["down_pending_when_healthy_done"] >= N - 1
    assert results["fanout_one_down"]["n"] == results["fanout_all_up"]["n"] == 4 * N
