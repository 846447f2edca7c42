"""``opsloop bench``'s pieces that need no broker: the workloads, the measures, the report, the ladder
flags and the Alertmanager config. (The bench's figures are printed by the bench, never asserted here.)"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from streams.cli.main import build_parser
from streams.devtools.bench import (
    T0,
    CpuWindow,
    Level,
    clock_ticks,
    cpu_seconds,
    latency_summary,
    parse_e2e_modes,
    parse_ladder,
    parse_storms,
    percentile,
    report,
    rss_bytes,
    run,
    storm_events,
    zipf_events,
)
from streams.devtools.bench.alertmanager import GROUP_BY, alert_key, alert_of, render_config, summarise
from streams.devtools.bench.measure import Spread


def test_events_are_catalogue_alerts_with_zipf_sessions_over_about_a_thousand_services():
    events = zipf_events(5_000)
    assert len(events) == 5_000 and all(e["kind"] == "telemetry" for e in events)
    services = Counter(e["labels"]["service"] for e in events)
    top = services.most_common(1)[0][1]
    assert 200 < len(services) <= 1_000  # a long tail
    assert top > 10 * (5_000 / len(services))  # and a few loud ones
    assert zipf_events(50) == zipf_events(50)  # seeded: the same run twice


def test_a_storm_is_one_firing_session_per_alert_and_reproducible():
    storm = storm_events(300)
    assert len({e["session_key"] for e in storm}) == 300
    assert all(e["type"] == "alert.firing" for e in storm)
    assert storm_events(20) == storm_events(20)


def test_storm_and_tick_ids_never_meet_the_workload_s():
    # the catalogue's ids hash rule and time only: without ids of their own, a storm alert at T0 + 10j ms had the
    # id of the workload's j-th alert of the same rule, and the flat-cost rung timed the storm's decision of it
    workload = {e["event_id"] for e in zipf_events(5_000)}
    storm, ticks = storm_events(50_000), clock_ticks(T0 + 60_000)
    assert not workload & {e["event_id"] for e in storm}
    assert not workload & {e["event_id"] for e in ticks}
    assert len({e["event_id"] for e in storm + ticks}) == len(storm) + len(ticks)
    assert {e["occurred_at"] for e in ticks} == {T0 + 60_000}


def test_percentiles_interpolate_between_ranks_like_numpy():
    values = list(range(1, 11))  # 1..10
    assert percentile(values, 50) == 5.5
    assert percentile(values, 0) == 1 and percentile(values, 100) == 10
    assert math.isclose(percentile(values, 99), 9.91)
    assert percentile(list(reversed(values)), 90) == percentile(values, 90)  # order does not matter
    assert math.isnan(percentile([], 50))
    assert percentile([7.0], 99.9) == 7.0
    summary = latency_summary([float(v) for v in range(1000)])
    assert summary["p50"] == 499.5 and summary["n"] == 1000 and math.isclose(summary["p99.9"], 998.001)


def test_spread_is_the_median_and_range_of_repeated_runs():
    assert Spread.of([3.0, 1.0, 2.0]).format() == "2 (1–3)"
    assert Spread.of([1500.0]).format() == "1,500"
    assert Spread.of([]).format() == "-"


def test_cpu_memory_and_machine_readings_come_from_proc():
    assert cpu_seconds(os.getpid()) is not None and cpu_seconds(2**22 + 12345) is None
    assert (rss_bytes(os.getpid()) or 0) > 1_000_000 and rss_bytes(2**22 + 12345) is None
    window = CpuWindow({"me": os.getpid()})
    assert not window.started  # a reader opens it at its first decision unless the rung opened it before the input
    window.start()
    assert window.started
    end = time.monotonic() + 0.5  # long enough for /proc/stat's 10 ms ticks not to dominate
    while time.monotonic() < end:
        pass
    window.stop()
    assert window.used["me"] > 0 and window.rss["me"] > 0  # (a loaded machine may give us little of a core)
    assert 0 < window.machine <= (os.cpu_count() or 1) * 1.2


def test_the_report_prints_rate_ratio_and_cpu_per_million():
    out = io.StringIO()
    report([Level("L1", 1000, 0.1, {"p": 0.02}), Level("L4", 1000, 1.0, {"worker": 0.4})], 1000, out)
    text = out.getvalue()
    assert "10,000" in text and "1,000" in text and "L4 / L1" in text and "0.100" in text and "worker 400" in text


def test_repeated_runs_report_median_and_range_and_the_latency_and_extras():
    def r50(p50: float, rate_s: float) -> Level:
        latency = {"p50": p50, "p99": 2 * p50, "p99.9": 3 * p50, "n": 2000.0}
        return Level("R50 fixed", 1000, rate_s, {"worker": 0.5}, {"worker": 200 * 2**20}, latency, {"duplicates": 0.0})

    levels = [
        Level("L4 one worker", 1000, 1.0, {"worker": 0.5}),
        Level("L5 two workers", 1000, 0.8, {"worker 1": 0.3, "worker 2": 0.3}, extra={"machine busy (cores)": 1.95}),
        Level("L4 one worker", 1000, 2.0, {"worker": 0.6}),
        Level("L5 two workers", 1000, 0.5, {"worker 1": 0.3, "worker 2": 0.3}, extra={"machine busy (cores)": 1.9}),
        r50(40.0, 10.0),
        r50(60.0, 10.0),
    ]
    out = io.StringIO()
    report(levels, 1000, out)
    text = out.getvalue()
    assert "2 runs: median (range)" in text
    assert "750 (500–1,000)" in text  # L4's rate
    assert "worker 550 (500–600)" in text  # its CPU-s per million
    assert "50.0 (40.0–60.0)" in text and "150.0 (120.0–180.0)" in text  # p50, p99.9
    assert "worker 200" in text  # RSS MB
    assert "duplicates 0;" not in text and "duplicates 0" in text  # counts print as integers
    assert "machine busy (cores) 1.9 (1.9–1.9)" in text or "machine busy (cores) 1.9" in text
    assert "L5 / L4" in text and "2.167" in text  # median 1,625 / 750


def test_flat_compares_each_window_with_the_one_of_the_same_round_and_prints_the_median():
    from streams.devtools.bench.report import flat_lines

    def window(storm: int, worker_cpu_s: float) -> Level:
        return Level(f"F{storm} flat cost, {storm:,} firing", 10_000, 2.0, {"worker": worker_cpu_s, "broker": 1.0})

    # rounds interleaved: (1k, 100k), (100k, 1k), (1k, 100k); the machine slower in round 2 for both
    levels = [window(1000, 2.0), window(100_000, 2.2), window(100_000, 3.9), window(1000, 3.0)]
    levels += [window(1000, 2.0), window(100_000, 2.6)]
    lines = flat_lines(levels)
    assert lines[-1] == (
        "F100000 / F1000 worker CPU-s per million events, window by window: 200 vs 220 (1.10); 300 vs 390 (1.30); "
        "200 vs 260 (1.30); median ratio 1.30"
    )
    assert flat_lines([window(1000, 2.0), window(1000, 2.1)]) == []  # one storm size compares nothing
    out = io.StringIO()
    report(levels, 20_000, out)
    assert "(1.10); 300 vs 390" in out.getvalue() and "runs: median" not in out.getvalue()  # windows, not runs


def test_ladder_flags_select_rungs_and_fixed_rates():
    assert parse_ladder("L1,L2,L4") == (["L1", "L2", "L4"], [])
    assert parse_ladder("l1, R50,r80") == (["L1", "L4"], [0.5, 0.8])  # a fixed rate needs the L4 drain rate
    assert parse_ladder("L4b,FLAT,L7") == (["L4b", "FLAT", "L7"], [])
    for bad in ("L8", "L9", "R0", "R150", "", "x"):
        with pytest.raises(ValueError):
            parse_ladder(bad)
    assert parse_storms("1000,100_000") == [1000, 100_000]
    for bad in ("0", "", "2000000"):
        with pytest.raises(ValueError):
            parse_storms(bad)
    with pytest.raises(ValueError, match="whole numbers"):
        parse_storms("1k,abc")
    assert parse_e2e_modes("slow") == ["slow"] and parse_e2e_modes("Slow, prompt,slow") == ["slow", "prompt"]
    for bad, reason in (("fast", "unknown mode 'fast'; known: prompt, slow"), (",", "no mode named")):
        with pytest.raises(ValueError, match=reason):
            parse_e2e_modes(bad)
    with pytest.raises(ValueError, match="L4b needs --baseline DIR"):
        run(ladder="L4b", out=io.StringIO())  # refused before any broker is started
    with pytest.raises(ValueError, match="needs an opsloop checkout"):
        run(ladder="L4", baseline=Path("/nonexistent"), out=io.StringIO())


def test_bench_is_a_subcommand_with_the_ladder_flags():
    args = build_parser().parse_args(["bench", "--events", "100", "--ladder", "L1,L4", "--repeat", "3"])
    assert args.events == 100 and args.func.__name__ == "cmd_bench"
    assert args.ladder == "L1,L4" and args.repeat == 3 and args.storms == "1000,100000"
    assert args.e2e_modes == "prompt,slow"
    assert build_parser().parse_args(["bench", "--e2e-modes", "slow"]).e2e_modes == "slow"


def test_alertmanager_config_groups_like_the_bench_sessions_and_posts_to_the_receiver(tmp_path: Path):
    text = render_config("http://127.0.0.1:9/hook", group_wait="2s")
    config = yaml.safe_load(text)
    assert config["route"]["group_by"] == list(GROUP_BY) == ["org", "alertname", "service"]
    assert config["route"]["group_wait"] == "2s" and config["route"]["receiver"] == "bench"
    assert config["receivers"] == [
        {
            "name": "bench",
            "webhook_configs": [{"url": "http://127.0.0.1:9/hook", "send_resolved": False, "max_alerts": 0}],
        }
    ]
    amtool = shutil.which("amtool")
    if amtool:  # Alertmanager's own checker, when Debian's package is installed
        path = tmp_path / "am.yml"
        path.write_text(text)
        check = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_alerts_carry_the_event_labels_and_org_and_the_summary_counts_latency_and_duplicates():
    import datetime as dt

    event = zipf_events(1)[0]
    alert = alert_of(event, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert alert["labels"]["alertname"] == event["labels"]["alertname"] and alert["labels"]["org"] == event["org"]
    assert alert["startsAt"].startswith("2026-01-01T00:00:00")
    a, b = alert_key({"x": "1"}), alert_key({"x": "2"})
    latencies, duplicates, notified = summarise({a: 10.0, b: 10.5}, [(12.0, [a, b]), (11.0, [a]), (20.0, [a, b])])
    assert sorted(latencies) == [1000.0, 1500.0] and duplicates == 3 and notified == 2


def test_l6_routing_sends_every_outside_receiver_to_the_local_receiver_and_keeps_log_and_remediate():
    from streams.devtools.bench.sinks import LOCAL_CONCURRENCY, SIGNING_ENV, local_routing
    from streams.settings import ROOT

    config = yaml.safe_load(local_routing((ROOT / "runbooks" / "routing.yaml").read_text(), "http://127.0.0.1:9"))
    by_name = {r["name"]: r for r in config["receivers"]}
    assert by_name["oncall-slack"] == {
        "name": "oncall-slack",
        "channel": "webhook",
        "settings": {"url": "http://127.0.0.1:9/oncall-slack"},
        "secrets": {"signing_key": SIGNING_ENV},
        "concurrency": LOCAL_CONCURRENCY,  # a receiver that tells repeats by key may take several at once
    }
    assert {r["channel"] for r in by_name.values()} == {"webhook", "log", "remediate"}
    assert config["route"]["receiver"] == "infra-slack" and config["inhibit_rules"]  # the rest is untouched


def test_the_scaling_note_says_when_the_machine_had_no_cpu_left_for_a_second_worker():
    from streams.devtools.bench.report import scaling_note

    busy = {"machine busy (cores)": 1.98}
    l4 = [Level("L4 one worker", 1000, 1.0, {"worker": 0.5, "broker": 0.2}, extra=busy)]
    l5 = [Level("L5 two workers", 1000, 0.9, {"worker 1": 0.3, "worker 2": 0.3, "broker": 0.2}, extra=busy)]
    note = scaling_note(l4, l5, cores=2)
    assert "1.11x" in note and "600 together" in note and "(one worker 500)" in note
    assert "busy 2.0 of 2 cores" in note and "CPU-bound" in note
    idle = {"machine busy (cores)": 1.0}
    assert "CPU-bound" not in scaling_note([Level("L4", 10, 1.0, {}, extra=idle)], l5, cores=2)


def test_e2e_routing_times_groups_as_alertmanager_does_without_inhibition_and_delivers_locally(tmp_path: Path):
    from agents.sinks.channels import specs
    from streams.devtools.bench.e2e import e2e_routing
    from streams.model.routing import load_routing
    from streams.settings import ROOT

    text = e2e_routing((ROOT / "runbooks" / "routing.yaml").read_text(), "http://127.0.0.1:9")
    config = yaml.safe_load(text)
    am = yaml.safe_load(render_config("http://127.0.0.1:9/"))["route"]
    assert {k: config["route"][k] for k in ("group_wait", "group_interval", "repeat_interval")} == {
        k: am[k] for k in ("group_wait", "group_interval", "repeat_interval")
    }
    assert config["inhibit_rules"] == []
    outside = [r for r in config["receivers"] if r["channel"] not in ("log", "remediate")]
    assert outside and all(r["settings"]["url"] == f"http://127.0.0.1:9/{r['name']}" for r in outside)
    (tmp_path / "routing.yaml").write_text(text)
    routing = load_routing(tmp_path / "routing.yaml", channels=specs())  # the worker's own loader takes it
    assert routing.receivers["infra-slack"].channel == "webhook"


def test_the_receiver_counts_a_notification_delivered_twice_by_key_or_by_alert_set():
    from streams.devtools.bench.receiver import duplicates, group_key, identity_of

    body = b'{"session_key": "default:alert:HostDown:svc-1", "created_at": 1}'
    assert identity_of({"Idempotency-Key": "eff-1"}, body) == ("eff-1", "default:alert:HostDown:svc-1", ())
    a = {"labels": {"alertname": "HostDown", "service": "svc-1", "instance": "a"}}
    b = {"labels": {"alertname": "HostDown", "service": "svc-1", "instance": "b"}}
    labels = {"org": "default", "alertname": "HostDown", "service": "svc-1"}

    def am(*alerts):
        import json

        return json.dumps({"groupKey": "{}:{org=default}", "groupLabels": labels, "alerts": list(alerts)}).encode()

    first, group, alerts = identity_of({}, am(a, b))
    assert group == group_key(labels) == "default:alert:HostDown:svc-1" and len(alerts) == 2
    assert identity_of({}, am(b, a))[0] == first  # the same alert set, in another order: the same notification
    grown = identity_of({}, am(a))[0]
    assert grown != first  # another alert set: a new notification, not a duplicate
    assert duplicates([first, grown, first, "eff-1", "eff-1", "eff-1"]) == 3


def test_group_latency_is_first_post_to_first_notification_and_the_e2e_line_compares_rates():
    from streams.devtools.bench.receiver import Delivery, group_latencies, summarise
    from streams.devtools.bench.report import e2e_lines

    deliveries = [Delivery(12.0, "/x", "k1", "g1"), Delivery(11.5, "/x", "k2", "g1"), Delivery(13.0, "/x", "k1", "g2")]
    assert sorted(group_latencies(deliveries, {"g1": 10.0, "g2": 12.0, "g3": 1.0})) == [1000.0, 1500.0]
    figures = summarise(deliveries, refused=4)
    assert figures["duplicates"] == 1 and figures["groups notified"] == 2 and figures["503s answered"] == 4
    assert figures["notifications /s (first to last)"] == pytest.approx(3 / 1.5)

    def side(name: str, rate: float, dups: float) -> Level:
        return Level(name, 100, 1.0, {}, extra={"notifications /s (first to last)": rate, "duplicates": dups})

    lines = e2e_lines([side("E2E slow: Alertmanager", 50, 3), side("E2E slow: opsloop (ingest, worker, sinks)", 60, 0)])
    assert lines[-1] == (
        "E2E slow receiver: opsloop / Alertmanager notifications/s 1.20 (60 vs 50); duplicates opsloop 0, "
        "Alertmanager 3"
    )
    assert e2e_lines([side("E2E prompt: Alertmanager", 1, 0)]) == []  # one side alone compares nothing


def test_e2e_is_a_rung_of_the_ladder():
    assert parse_ladder("E2E,L7") == (["E2E", "L7"], [])


def test_e2e_reads_notify_effect_times_and_counts_dead_letters_by_kind():
    from streams.devtools.bench.e2e import dead_letter_reasons, outbox_times

    outbox = [(5, {"type": "notify", "effect_id": "a"}), (6, {"type": "schedule_timer", "effect_id": "t"})]
    assert outbox_times(outbox) == {"a": 5}
    letters = [
        (1, {"reason": "receiver 'x' backlog full (1000 pending)"}),
        (2, {"reason": "receiver 'y' backlog full"}),
    ]
    assert dead_letter_reasons(letters) == {"receiver 'x' backlog": 1, "receiver 'y' backlog": 1}


def test_the_must_show_block_judges_each_rung_run_and_leaves_out_those_not_run():
    from streams.devtools.bench.report import E2E_RATE, must_show_lines

    def level(name: str, events: int, seconds: float, **extra: float) -> Level:
        return Level(name, events, seconds, {"worker": 1.0}, extra=dict(extra))

    levels = [
        level("L1 aiokafka passthrough", 40_000, 1.0),
        level("L4 one opsloop worker", 40_000, 4.0, **{"machine busy (cores)": 1.3}),  # 0.25 x L1
        level("L5 two opsloop workers", 40_000, 3.0, **{"machine busy (cores)": 1.95}),  # 1.33 x, machine full
        Level("R50 fixed 50% of L4", 100, 1.0, {}, latency={"p50": 20.0, "p99": 50.0, "p99.9": 60.0, "n": 100}),
        Level("E2E slow: Alertmanager", 100, 1.0, {}, extra={E2E_RATE: 70, "duplicates": 9}),
        Level("E2E slow: opsloop (ingest, worker, sinks)", 100, 1.0, {}, extra={E2E_RATE: 71, "duplicates": 0}),
    ]
    lines = must_show_lines(levels, cores=2)
    assert lines[1] == "must-show (issue 17)"
    verdicts = {line.split()[0]: line for line in lines[2:]}
    assert "met: 0.250" in verdicts["L4"]
    assert "NOT MET: 50.0 ms" in verdicts["R50"]  # under 50, not at it
    assert "met: 1.01 x" in verdicts["E2E"] and "duplicates 0 (Alertmanager 9)" in verdicts["E2E"]
    assert "met: 1.33 x" in verdicts["L5"] and "no room for a second worker" in verdicts["L5"]
    assert not any("CPU per event" in line for line in lines)  # FLAT not run: not judged

    # a second worker that had room and did not use it is not excused
    roomy = [levels[1], level("L5 two opsloop workers", 40_000, 3.0, **{"machine busy (cores)": 1.5})]
    roomy[0] = level("L4 one opsloop worker", 40_000, 4.0, **{"machine busy (cores)": 1.0})
    assert "NOT MET: 1.33 x" in must_show_lines(roomy, cores=2)[-1]

    # FLAT: the median of the window ratios, and the highest idle reading
    def window(storm: int, cpu_s: float, idle: float) -> Level:
        return level(f"F{storm} flat cost, {storm:,} firing", 10_000, 2.0, **{"idle CPU % (10 s after settling)": idle})

    flat = [window(1000, 2.0, 1.0), window(100_000, 2.0, 4.0), window(100_000, 2.0, 4.0), window(1000, 2.0, 1.0)]
    for lv, cpu in zip(flat, (2.0, 2.6, 2.4, 2.0)):
        lv.cpu = {"worker": cpu}
    flat_verdicts = must_show_lines(flat, cores=2)[2:]
    assert "NOT MET: median of 2 windows 1.25" in flat_verdicts[0]  # 1.30 and 1.20
    assert "met: highest 4.0 %" in flat_verdicts[1]
    assert must_show_lines([level("L2 app floor", 1, 1.0)]) == []
    baseline_idle = level("L4b baseline worker", 1, 1.0, **{"idle CPU % (10 s after settling)": 9.0})
    assert "met: highest 4.0 %" in must_show_lines([*flat, baseline_idle], cores=2)[-1]  # another checkout's worker
