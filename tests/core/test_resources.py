"""Resource arithmetic for relaunches: Kubernetes quantities, scaled, set, capped, never lowered."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerund.core.resources import (
    RESOURCE_NAMES,
    ResourceRule,
    ResourceRules,
    ResourcesView,
    format_quantity,
    parse_multiplier,
    parse_quantity,
    plan_resources,
)

GI = 2**30


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4Gi", 4 * GI),
        ("512Mi", 512 * 2**20),
        ("1.5Gi", 3 * GI // 2),
        ("500m", Fraction(1, 2)),
        ("2", 2),
        ("0.25", Fraction(1, 4)),
        ("1e3", 1000),
        ("1G", 10**9),
        ("10k", 10_000),
        ("1Ti", 2**40),
    ],
    ids=lambda v: str(v),
)
def test_quantities_parse_exactly(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "4GB", "-1Gi", "Gi", "2x", "1..5", "four"])
def test_a_non_quantity_is_refused_with_the_accepted_forms(text):
    with pytest.raises(
        ValueError, match=r"is not a Kubernetes quantity; write a number with an optional suffix"
    ):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("resource", "value", "text"),
    [
        ("memory", 8 * GI, "8Gi"),
        ("memory", 1536 * 2**20, "1536Mi"),
        ("memory", 10**9, "1G"),
        ("memory", Fraction(1, 2), "1"),  # rounded up to a whole byte
        ("cpu", 4, "4"),
        ("cpu", Fraction(3, 2), "1500m"),
        ("cpu", Fraction(1, 3000), "1m"),  # rounded up to a millicore
        ("gpu", Fraction(3, 2), "2"),
        ("ephemeral_storage", 100 * GI, "100Gi"),
    ],
)
def test_quantities_format_in_their_resource_units_rounding_up(resource, value, text):
    assert format_quantity(resource, Fraction(value)) == text


@given(
    resource=st.sampled_from(RESOURCE_NAMES),
    value=st.fractions(min_value=0, max_value=2**50, max_denominator=10_000),
)
def test_formatting_never_rounds_down_and_parses_back(resource, value):
    text = format_quantity(resource, value)
    back = parse_quantity(text)
    assert back >= value
    # At most one unit of the resource's resolution above.
    assert back - value < (Fraction(1, 1000) if resource == "cpu" else 1)


def test_multipliers_are_recognised():
    assert parse_multiplier("2x") == 2
    assert parse_multiplier("1.5x") == Fraction(3, 2)
    assert parse_multiplier("16Gi") is None


def _rules(cap: str | None = None, **rules: str) -> ResourceRules:
    built = {}
    for name, text in rules.items():
        factor = parse_multiplier(text)
        built[name] = (
            ResourceRule(text, factor=factor)
            if factor is not None
            else ResourceRule(text, value=parse_quantity(text))
        )
    caps = {name: parse_quantity(cap) for name in rules} if cap else {}
    texts = {name: cap for name in rules} if cap else {}
    return ResourceRules(rules=built, caps=caps, cap_texts=texts)  # type: ignore[arg-type]


SOURCE = ResourcesView(requests={"memory": "4Gi", "cpu": "1"}, limits={"memory": "4Gi", "cpu": "2"})


def test_a_multiplier_scales_request_and_limit_and_keeps_other_resources_exactly():
    plan = plan_resources(SOURCE, _rules(memory="2x"))
    assert plan.target == ResourcesView(
        requests={"memory": "8Gi", "cpu": "1"}, limits={"memory": "8Gi", "cpu": "2"}
    )
    assert plan.changes == ("memory request 4Gi -> 8Gi", "memory limit 4Gi -> 8Gi")
    assert plan.grew


def test_a_set_value_sets_request_and_the_existing_limit():
    plan = plan_resources(SOURCE, _rules(memory="16Gi"))
    assert plan.target.requests["memory"] == "16Gi"
    assert plan.target.limits["memory"] == "16Gi"


def test_the_cap_stops_growth_and_says_so():
    plan = plan_resources(ResourcesView(requests={"memory": "12Gi"}), _rules(cap="16Gi", memory="2x"))
    assert plan.target.requests == {"memory": "16Gi"}
    assert plan.notes == ("memory request capped at max 16Gi",)
    at_cap = plan_resources(ResourcesView(requests={"memory": "16Gi"}), _rules(cap="16Gi", memory="2x"))
    assert not at_cap.grew
    assert at_cap.notes == ("memory request stays 16Gi: it is already at or above its max 16Gi",)


def test_a_multiplier_on_a_resource_the_source_does_not_request_leaves_it_unset():
    plan = plan_resources(ResourcesView(requests={"cpu": "1"}), _rules(memory="2x"))
    assert "memory" not in plan.target.requests
    assert not plan.grew
    assert plan.notes == (
        "memory 2x cannot apply: the source requests no memory (set a value instead, e.g. memory: 16Gi)",
    )


def test_a_set_value_below_the_source_never_lowers_it():
    plan = plan_resources(SOURCE, _rules(memory="1Gi"))
    assert plan.target.requests["memory"] == "4Gi"
    assert plan.notes == (
        "memory request stays 4Gi: 1Gi would lower it, and a relaunch never lowers a resource",
        "memory limit stays 4Gi: 1Gi would lower it, and a relaunch never lowers a resource",
    )


def test_a_limit_is_never_left_below_its_request():
    plan = plan_resources(
        ResourcesView(requests={"memory": "2Gi"}, limits={"memory": "3Gi"}), _rules(memory="2x", cap="4Gi")
    )
    assert plan.target.requests["memory"] == "4Gi"
    assert plan.target.limits["memory"] == "4Gi"


quantities = st.integers(min_value=1, max_value=2**45).map(lambda b: format_quantity("memory", Fraction(b)))


@given(
    request=quantities,
    limit=st.one_of(st.none(), quantities),
    rule=st.one_of(
        st.fractions(min_value=1, max_value=8, max_denominator=4).map(lambda f: f"{float(f):g}x"),
        quantities,
    ),
    cap=st.one_of(st.none(), quantities),
)
def test_planned_resources_are_never_below_the_source_nor_above_the_cap(request, limit, rule, cap):
    source = ResourcesView(requests={"memory": request}, limits={"memory": limit} if limit else {})
    factor = parse_multiplier(rule)
    rules = ResourceRules(
        rules={
            "memory": ResourceRule(rule, factor=factor)
            if factor is not None
            else ResourceRule(rule, value=parse_quantity(rule))
        },
        caps={"memory": parse_quantity(cap)} if cap else {},
        cap_texts={"memory": cap} if cap else {},
    )
    plan = plan_resources(source, rules)
    for which, old in (("requests", request), ("limits", limit)):
        new = getattr(plan.target, which).get("memory")
        if old is None:
            assert new is None
            continue
        assert new is not None
        assert parse_quantity(new) >= parse_quantity(old)  # never lowered
        if cap is not None:
            assert parse_quantity(new) <= max(
                parse_quantity(cap), parse_quantity(old), parse_quantity(request)
            )
    if plan.target.limits.get("memory"):
        assert parse_quantity(plan.target.limits["memory"]) >= parse_quantity(plan.target.requests["memory"])
    assert plan.grew == any(
        parse_quantity(getattr(plan.target, w)["memory"]) > parse_quantity(o)
        for w, o in (("requests", request), ("limits", limit))
        if o is not None
    )


def test_a_source_value_that_is_not_a_quantity_is_kept_and_named_never_raised():
    """The SDK sends a task's resource text as written: ``memory="16GB"`` reaches the wire."""
    source = ResourcesView(requests={"memory": "16GB", "cpu": "1"}, limits={"memory": "16GB"})
    for rules in (_rules(memory="2x"), _rules(memory="32Gi"), _rules(memory="2x", cap="64Gi")):
        plan = plan_resources(source, rules)
        assert plan.target == source
        assert not plan.grew
        assert plan.notes == (
            f"memory {rules.rules['memory'].text} cannot apply: the source's memory request '16GB' is "
            "not a Kubernetes quantity (e.g. 16Gi); memory is kept as deployed",
        )
