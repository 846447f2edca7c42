"""The train / test split is by service: nothing of a test service is trained on."""

from __future__ import annotations

from classifier.corpus import Sample, held_out_services, split_by_service


def test_no_service_on_both_sides(split):
    train, test, _ = split
    assert {s.service for s in train}.isdisjoint({s.service for s in test})
    assert 0.15 < len(test) / (len(train) + len(test)) < 0.4


def test_every_group_with_several_services_is_tested(split):
    train, test, _ = split
    groups = {}
    for s in train + test:
        groups.setdefault(s.group, set()).add(s.service)
    tested = {s.group for s in test}
    assert {g for g, services in groups.items() if len(services) >= 2} <= tested


def test_split_is_deterministic_and_unit_is_the_service():
    samples = [Sample({}, "cpu", "info", group, f"svc-{i}", "rule", str(i)) for i in range(40) for group in ("a",)]
    samples += [Sample({}, "cpu", "info", "b", "svc-0", "example", "x")]  # same service in another group
    held = held_out_services(samples)
    assert held == held_out_services(list(samples)) and held
    train, test = split_by_service(samples)
    assert {s.service for s in train}.isdisjoint({s.service for s in test})
    assert sum(1 for s in test if s.service == "svc-0") in (0, 2)
