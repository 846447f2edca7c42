"""Each policy gate on its own: small pure functions, their verdicts and reasons."""

from __future__ import annotations

from streams.core import gates as policy
from streams.model.matchers import parse_matchers
from streams.model.routing import InhibitRule, Timing
from streams.model.runbooks import Flapping, Trigger
from streams.model.silences import silence_from_json

MIN = 60_000


def test_cooldown_stops_inside_and_passes_after():
    assert not policy.cooldown_gate(None, 1000, 15 * MIN).stopped
    gate = policy.cooldown_gate(0, 14 * MIN, 15 * MIN)
    assert gate.stopped and gate.until == 15 * MIN and "cooldown 15m" in gate.reason
    assert not policy.cooldown_gate(0, 15 * MIN, 15 * MIN).stopped
    assert not policy.cooldown_gate(0, 1, 0).stopped  # no cooldown configured


def test_dedupe_gate_and_pruning():
    log = {"k": 1000}
    assert policy.dedupe_gate(log, "k", 1000 + 10 * MIN - 1, 10 * MIN).stopped
    assert not policy.dedupe_gate(log, "k", 1000 + 10 * MIN, 10 * MIN).stopped
    assert not policy.dedupe_gate(log, "other", 1001, 10 * MIN).stopped
    assert policy.prune_dedupe({"old": 0, "new": 9 * MIN}, 10 * MIN, 10 * MIN) == {"new": 9 * MIN}


def test_cap_gate_and_resets():
    assert not policy.cap_gate(2, 3).stopped
    gate = policy.cap_gate(3, 3)
    assert gate.stopped and "max 3" in gate.reason
    assert policy.resets_cap(("ack", "resolve"), "ack")
    assert not policy.resets_cap(("resolve",), "ack")


def test_group_gate_uses_wait_interval_and_repeat():
    t = Timing(group_wait=30_000, group_interval=5 * MIN, repeat_interval=4 * 60 * MIN)
    wait = policy.group_gate("initial", first_seen=0, last_sent=None, now=10_000, timing=t, wait=30_000)
    assert wait.stopped and wait.until == 30_000
    assert not policy.group_gate("initial", first_seen=0, last_sent=None, now=30_000, timing=t, wait=30_000).stopped
    upd = policy.group_gate("update", first_seen=0, last_sent=MIN, now=2 * MIN, timing=t, wait=0)
    assert upd.stopped and upd.until == 6 * MIN
    rep = policy.group_gate("repeat", first_seen=0, last_sent=0, now=60 * MIN, timing=t, wait=0)
    assert rep.stopped and rep.until == 4 * 60 * MIN


def test_flapping_counts_changes_inside_the_window():
    pol = Flapping(flips=4, window=10 * MIN, stable_for=10 * MIN)
    flips: list[int] = []
    for t in (0, MIN, 2 * MIN):
        flips = policy.record_flip(flips, t, pol)
    assert not policy.is_flapping(flips, 2 * MIN, pol)
    flips = policy.record_flip(flips, 3 * MIN, pol)
    assert policy.is_flapping(flips, 3 * MIN, pol)
    assert policy.record_flip([0, MIN], 10 * MIN + 30_000, pol) == [MIN, 10 * MIN + 30_000]
    gate = policy.flapping_gate(True, 3 * MIN, 4 * MIN, pol)
    assert gate.stopped and gate.until == 13 * MIN
    assert not policy.flapping_gate(False, None, 0, pol).stopped


def test_silence_gate_respects_matchers_and_window():
    s = silence_from_json(
        {"id": "s1", "matchers": ['service=~"db|cache"', 'env!="dev"'], "starts_at": 100, "ends_at": 200}
    )
    assert policy.silence_gate([s], {"service": "db", "env": "prod"}, 150).stopped
    assert not policy.silence_gate([s], {"service": "db", "env": "dev"}, 150).stopped
    assert not policy.silence_gate([s], {"service": "dbx"}, 150).stopped  # regexes are anchored
    assert not policy.silence_gate([s], {"service": "db"}, 200).stopped  # ends_at is exclusive
    assert not policy.silence_gate([s], {"service": "db"}, 99).stopped


def test_inhibition_needs_a_source_with_equal_labels_and_never_inhibits_itself():
    rule = InhibitRule(
        source=parse_matchers(['severity="urgent"']), target=parse_matchers(['severity="warning"']), equal=("service",)
    )
    target = {"alertname": "HighLatency", "severity": "warning", "service": "api"}
    source = {"alertname": "ApiDown", "severity": "urgent", "service": "api"}
    assert policy.inhibition_gate(target, [source], [rule]).stopped
    assert not policy.inhibition_gate(target, [{**source, "service": "web"}], [rule]).stopped
    assert not policy.inhibition_gate(source, [source], [rule]).stopped
    both = InhibitRule(source=parse_matchers(['alertname=~".+"']), target=parse_matchers(['alertname=~".+"']))
    assert not policy.inhibition_gate(source, [source], [both]).stopped


def test_inhibition_sources_are_firing_alerts_matching_a_source():
    from streams.core.messages import firing_labels

    rule = InhibitRule(source=parse_matchers(['severity="urgent"']), target=parse_matchers(['severity="warning"']))
    state = {
        "alerts": {
            "a1": {
                "status": "firing",
                "severity": "urgent",
                "category": "availability",
                "labels": {"a": "1", "severity": "critical"},
            },
            "a2": {"status": "resolved", "severity": "urgent", "category": "availability", "labels": {"a": "2"}},
            "a3": {"status": "firing", "severity": "warning", "category": "cpu", "labels": {"a": "3"}},
        }
    }
    [source] = policy.inhibition_sources(firing_labels(state, "acme"), [rule])
    assert source["a"] == "1" and source["severity"] == "urgent" and source["org"] == "acme"


def test_condition_step_needs_the_for_duration_and_clears_on_one_miss():
    trig = Trigger(metric="m", operator=">", threshold=5, for_=2 * MIN)
    since, on, tr = policy.condition_step(None, False, 6, 0, trig)
    assert (since, on, tr) == (0, False, None)
    since, on, tr = policy.condition_step(since, on, 7, 2 * MIN, trig)
    assert (on, tr) == (True, "fire")
    assert policy.condition_step(since, on, 8, 3 * MIN, trig) == (0, True, None)
    assert policy.condition_step(since, on, 5, 4 * MIN, trig) == (None, False, "clear")
    assert policy.condition_step(None, False, 1, 5 * MIN, trig) == (None, False, None)


def test_an_inhibit_rule_holds_within_one_org_even_when_its_equal_leaves_org_out(tmp_path):
    """A rule copied from an Alertmanager config (``equal: [service]``) let org a's urgent alert mute org b's
    warnings of the same service name: any producer allowed to write org a could quiet org b."""
    from agents.sinks.channels import specs
    from streams.model.routing import load_routing

    path = tmp_path / "routing.yaml"
    path.write_text(
        "receivers: [{name: log, channel: log}]\n"
        "route: {receiver: log}\n"
        "inhibit_rules:\n"
        "  - source_matchers: ['severity=\"urgent\"']\n"
        "    target_matchers: ['severity=\"warning\"']\n"
        "    equal: [service]\n"
    )
    [rule] = load_routing(path, channels=specs()).inhibit_rules
    assert rule.equal == ("service", "org")
    target = {"alertname": "HighLatency", "severity": "warning", "service": "api", "org": "b"}
    source = {"alertname": "ApiDown", "severity": "urgent", "service": "api", "org": "a"}
    assert not policy.inhibition_gate(target, [source], [rule]).stopped
    assert policy.inhibition_gate({**target, "org": "a"}, [source], [rule]).stopped


def test_the_starter_inhibit_rule_mutes_the_warning_of_the_same_alert_on_the_same_target_only():
    """kube-prometheus's rules through Debian's Prometheus: node-exporter is one service for every node,
    and with the rule of before (any critical of a service mutes the service's warnings) node-a's full disk
    muted every node's memory, clock and network warnings. Now: Alertmanager's own example and
    kube-prometheus's rule, the same alertname, with the target's labels (service, namespace, instance)."""
    from tests.decide.helpers import starter_set

    rules = starter_set().routing.inhibit_rules
    node = {"org": "acme", "service": "node-exporter", "namespace": "monitoring", "job": "node-exporter"}
    disk = {**node, "alertname": "NodeFilesystemAlmostOutOfSpace", "mountpoint": "/"}
    critical = {**disk, "severity": "urgent", "instance": "node-a:9100"}
    assert policy.inhibition_gate({**critical, "severity": "warning"}, [critical], rules).stopped
    for target in (
        {**disk, "severity": "warning", "instance": "node-b:9100"},  # another node's disk
        {**critical, "severity": "warning", "mountpoint": "/var/lib/kubelet"},  # another filesystem of the node
        {**node, "alertname": "NodeMemoryHighUtilization", "severity": "warning", "instance": "node-a:9100"},
    ):
        assert not policy.inhibition_gate(target, [critical], rules).stopped, target

    # kube-state-metrics is one service (and one instance) for every namespace: one namespace's only
    ksm = {"org": "acme", "service": "kube-state-metrics", "instance": "10.244.1.7:8080"}
    full = {
        **ksm,
        "alertname": "KubePersistentVolumeFillingUp",
        "namespace": "payments",
        "persistentvolumeclaim": "data-postgres-0",
        "severity": "urgent",
    }
    assert policy.inhibition_gate({**full, "severity": "warning"}, [full], rules).stopped
    assert not policy.inhibition_gate({**full, "severity": "warning", "namespace": "shop"}, [full], rules).stopped
    another_claim = {**full, "severity": "warning", "persistentvolumeclaim": "data-postgres-1"}
    assert not policy.inhibition_gate(another_claim, [full], rules).stopped
    other = {**ksm, "alertname": "KubeDeploymentReplicasMismatch", "namespace": "payments", "severity": "warning"}
    assert not policy.inhibition_gate(other, [full], rules).stopped

    # Ceph's mixin under cephadm: every cluster's instance is "ceph_cluster"; one cluster's critical must not
    # mute the other cluster's warning of the same alert
    osd = {"org": "acme", "alertname": "CephOSDNearFull", "instance": "ceph_cluster", "job": "ceph"}
    assert policy.inhibition_gate(
        {**osd, "cluster": "a1f0", "severity": "warning"}, [{**osd, "cluster": "a1f0", "severity": "urgent"}], rules
    ).stopped
    assert not policy.inhibition_gate(
        {**osd, "cluster": "7d3b", "severity": "warning"}, [{**osd, "cluster": "a1f0", "severity": "urgent"}], rules
    ).stopped

    # Thanos' mixin keys its alerts by job (no service, namespace or instance): a critical one muted every
    # warning of its org that names none of them; now only its own warning variant
    store_down = {"alertname": "ThanosStoreIsDown", "severity": "urgent", "org": "acme", "job": "thanos-store"}
    for target in (
        {"alertname": "ThanosCompactHalted", "job": "thanos-compact", "severity": "warning", "org": "acme"},
        {"alertname": "HostHighCpuLoad", "instance": "db-1:9100", "severity": "warning", "org": "acme"},
    ):
        assert not policy.inhibition_gate(target, [store_down], rules).stopped, target["alertname"]
    # kube-prometheus's KubeAPIErrorBudgetBurn: a critical (long=1h) and a warning (long=1d), no target labels
    burn = {"alertname": "KubeAPIErrorBudgetBurn", "org": "acme"}
    assert policy.inhibition_gate(
        {**burn, "severity": "warning", "long": "1d"}, [{**burn, "severity": "urgent", "long": "1h"}], rules
    ).stopped
    # and never across orgs
    assert not policy.inhibition_gate({**critical, "severity": "warning", "org": "globex"}, [critical], rules).stopped
