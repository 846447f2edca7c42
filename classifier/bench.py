"""Prediction throughput: one event per call vs batched, model vs keyword rules.

    python -m classifier.bench [--events 20000] [--batch-size 256] [--save]

Events are catalogue rules rendered as alerts (firing and resolved, each with its own
instance), the bulk of what the decide agent classifies. Batched figures include
feature extraction, since the decide agent hands raw events over. Two batched model
figures: "cold" starts with empty memo caches; the headline one first runs the
catalogue's rules on other hosts (as a running worker has seen its rules fire before)
and then measures events it has never seen. Prints figures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from classifier.dataset import load_rules, rule_to_event
from classifier.keyword import KeywordClassifier
from classifier.model import ModelClassifier, load_classifier

BENCH_RESULTS_PATH = Path(__file__).resolve().parent / "bench_results.json"


def bench_events(n: int, fleet: str = "a") -> list[dict[str, Any]]:
    """n distinct alert events cycling through the catalogue (deterministic).

    ``fleet`` names the hosts, so two fleets share rules but no instance (and hence no
    summary text): warming caches on one and measuring on the other is a fair picture
    of a worker that has seen the rules before but not these alerts.
    """
    rules = load_rules()
    events = []
    for i in range(n):
        rule = rules[i % len(rules)]
        round_ = i // len(rules)
        events.append(
            rule_to_event(
                rule,
                instance=f"{fleet}-{round_}-{i % 97}.acme.internal:9100",
                occurred_at=1_700_000_000_000 + i,
                status="resolved" if i % 5 == 4 else "firing",
            )
        )
    return events


def _rate(fn: Callable[[], Any], n_events: int) -> float:
    start = time.perf_counter()
    fn()
    return n_events / (time.perf_counter() - start)


def run(
    n_events: int = 20_000,
    batch_size: int = 256,
    single_events: int = 2_000,
    repeats: int = 3,
    baseline: str | None = None,
) -> dict[str, Any]:
    """Measure and return the figures (events per second; best and median of ``repeats`` runs,
    each on alerts not seen before, since other work on a shared machine only ever slows a run).

    ``baseline``: another artifact (the previous model) measured batched in the same run,
    its runs interleaved with the current model's, so both see the same machine load.
    """
    clf = load_classifier()
    if not isinstance(clf, ModelClassifier):
        raise SystemExit("no model artifact: run `opsloop classifier train` first")
    keyword = KeywordClassifier()
    old = load_classifier(baseline) if baseline else None

    def batched(classifier: Any, events: list[dict[str, Any]]) -> Callable[[], object]:
        batches = [events[i : i + batch_size] for i in range(0, len(events), batch_size)]
        return lambda: [classifier.predict_batch(b) for b in batches]

    warmup = bench_events(n_events, "warm")
    cold, model_rates, keyword_rates = [], [], []
    for rep in range(repeats):
        clf.clear_caches()
        cold.append(_rate(batched(clf, bench_events(n_events, f"cold{rep}")), n_events))  # nothing memoised
    clf.clear_caches()
    batched(clf, warmup)()  # the worker has seen these rules fire before, not the alerts measured next
    old_rates: list[float] = []
    if old is not None:
        batched(old, warmup)()
    for rep in range(repeats):
        model_rates.append(_rate(batched(clf, bench_events(n_events, f"fresh{rep}")), n_events))
        if old is not None:
            old_rates.append(_rate(batched(old, bench_events(n_events, f"old{rep}")), n_events))
        keyword_rates.append(_rate(batched(keyword, bench_events(n_events, f"kw{rep}")), n_events))
    singles = bench_events(single_events, "single")
    single = _rate(lambda: [clf.predict_batch([e]) for e in singles], single_events)
    return {
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "events": n_events,
        "batch_size": batch_size,
        "model_version": clf.version,
        "repeats": repeats,
        "single_per_s": single,
        "batched_per_s": max(model_rates),
        "batched_median_per_s": statistics.median(model_rates),
        "batched_cold_per_s": max(cold),
        "keyword_batched_per_s": max(keyword_rates),
        "keyword_batched_median_per_s": statistics.median(keyword_rates),
        **(
            {
                "baseline_model_version": old.version,
                "baseline_batched_per_s": max(old_rates),
                "baseline_batched_median_per_s": statistics.median(old_rates),
            }
            if old is not None
            else {}
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m classifier.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--baseline", help="another artifact (e.g. the previous model) to measure batched in the same run"
    )
    parser.add_argument("--save", action="store_true", help=f"also write {BENCH_RESULTS_PATH.name} for the report")
    args = parser.parse_args(argv)
    res = run(args.events, args.batch_size, repeats=args.repeats, baseline=args.baseline)
    print(
        f"model {res['model_version']}, {res['events']} events, batch size {res['batch_size']}, "
        f"{res['cpus']} cpus, load average {res['load_average_1m']} (other processes slow every figure)"
    )
    print(f"best of {res['repeats']} runs (median in brackets)")
    print(f"{'single-event (model)':34}{res['single_per_s']:>12,.0f} events/s")
    print(
        f"{'batched (model, features incl.)':34}{res['batched_per_s']:>12,.0f} events/s"
        f"  ({res['batched_median_per_s']:,.0f})"
    )
    print(f"{'batched, cold caches (model)':34}{res['batched_cold_per_s']:>12,.0f} events/s")
    if "baseline_batched_per_s" in res:
        print(
            f"{'batched (previous ' + res['baseline_model_version'] + ')':34}{res['baseline_batched_per_s']:>12,.0f} events/s"
            f"  ({res['baseline_batched_median_per_s']:,.0f})"
        )
    print(
        f"{'batched (keyword baseline)':34}{res['keyword_batched_per_s']:>12,.0f} events/s"
        f"  ({res['keyword_batched_median_per_s']:,.0f})"
    )
    if args.save:
        rounded = {k: (round(v) if isinstance(v, float) and k.endswith("_per_s") else v) for k, v in res.items()}
        BENCH_RESULTS_PATH.write_text(json.dumps(rounded, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
