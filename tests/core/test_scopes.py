"""Scopes with wildcards: which listings serve them and which runs they cover."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerund.core.scopes import ORG, Coverage, plan


@pytest.mark.parametrize(
    ("scopes", "listings"),
    [
        ([("demo", "development")], (("demo", "development"),)),
        ([("a", "b"), ("c", "d"), ("a", "b")], (("a", "b"), ("c", "d"))),
        ([("*", "*")], (ORG,)),
        ([("ml", "*"), ("*", "production"), ("data", "dev")], (ORG, ("data", "dev"))),
        ([("ml", "*"), ("ml", "production")], (ORG,)),
    ],
    ids=[
        "one-concrete",
        "duplicates-once",
        "whole-org",
        "wildcards-and-an-uncovered-scope",
        "covered-scope-dropped",
    ],
)
def test_plan_lists_concrete_scopes_and_the_org_once(scopes, listings):
    assert plan(scopes) == listings


@pytest.mark.parametrize(
    ("scopes", "run", "covered"),
    [
        ([("*", "*")], ("anything", "anywhere"), True),
        ([("ml", "*")], ("ml", "production"), True),
        ([("ml", "*")], ("mlx", "production"), False),
        ([("*", "production")], ("vision", "production"), True),
        ([("*", "production")], ("vision", "development"), False),
        ([("team-?", "dev")], ("team-a", "dev"), True),
        ([("demo", "development")], ("demo", "development"), True),
    ],
    ids=[
        "org",
        "project-any-domain",
        "other-project",
        "domain-any-project",
        "other-domain",
        "glob",
        "concrete",
    ],
)
def test_coverage_matches_both_parts(scopes, run, covered):
    assert Coverage(tuple(scopes)).covers(*run) is covered


names = st.sampled_from(["ml", "data", "vision", "demo", "*"])
domains = st.sampled_from(["development", "staging", "production", "*"])


@given(
    scopes=st.lists(st.tuples(names, domains), min_size=1, max_size=6),
    run=st.tuples(
        st.sampled_from(["ml", "data", "vision", "demo", "new"]),
        st.sampled_from(["development", "production"]),
    ),
)
def test_every_covered_run_is_found_by_exactly_the_listings_that_cover_it(scopes, run):
    coverage = Coverage(tuple(scopes))
    listings = plan(scopes)
    finders = [listing for listing in listings if coverage.in_listing(listing, *run)]
    if coverage.covers(*run):
        assert len(finders) == 1  # found once: never decided twice from two listings
    else:
        assert finders == []
    assert listings.count(ORG) == (1 if coverage.org_wide else 0)


def test_which_listing_finds_a_run_is_answered_per_set_of_scopes_when_asked_again_and_again():
    """``in_listing`` is remembered (the loop asks it for every owed failure on every pass):
    the same run asked of two sets of scopes in turn gets each set's own answer every time."""
    wide, narrow = Coverage((("ml", "*"),)), Coverage((("ml", "production"),))
    for _ in range(3):
        assert wide.finds("*/*", "ml", "production") and not wide.finds("ml/production", "ml", "production")
        assert narrow.finds("ml/production", "ml", "production") and not narrow.finds(
            "*/*", "ml", "production"
        )
        assert not narrow.finds("ml/production", "ml", "development")
