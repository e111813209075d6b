"""Rerun names against an oracle of their own: a DNS-1035 label checked character by
character (no regular expression), so a broken ``is_valid_name`` cannot vouch for itself; and
the sanitising of roots that are not labels, pinned (exactly-once across versions depends on
computing the same name again). Hashed parts are matched by shape only: their length and
alphabet belong to the naming scheme, which pins them in its own tests."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rerund.core.names import MAX_NAME_LENGTH, is_valid_name, rerun_name, suffixed_name

_FIRST = set(string.ascii_lowercase)
_LAST = _FIRST | set(string.digits)
_INNER = _LAST | {"-"}


def dns1035(name: str) -> bool:
    """The oracle: 1-30 characters; a lowercase ASCII letter first; lowercase letters, digits
    and '-' inside; a letter or digit last."""
    return 1 <= len(name) <= 30 and name[0] in _FIRST and name[-1] in _LAST and all(c in _INNER for c in name)


NAMES = st.text(alphabet=string.ascii_lowercase + string.digits + "-_.A\nZ é", max_size=34)


def test_the_oracle_and_the_limit_agree() -> None:
    assert MAX_NAME_LENGTH == 30


@given(NAMES)
def test_is_valid_name_agrees_with_the_oracle(name: str) -> None:
    assert is_valid_name(name) == dns1035(name)


@pytest.mark.parametrize(
    "name",
    ["abc\n", "abc!", "abc-", "a" * 31, "1abc", "-abc", "Abc", "ab c", "ab_c", "é", "", "abc\n\n"],
)
def test_these_are_not_run_names(name: str) -> None:
    assert not is_valid_name(name)
    assert not dns1035(name)


@pytest.mark.parametrize("name", ["a", "abc123", "a-b", "x" * 30, "a1", "a--b"])
def test_these_are_run_names(name: str) -> None:
    assert is_valid_name(name) and dns1035(name)


@given(st.text(max_size=80), st.integers(min_value=1, max_value=10**6))
def test_every_rerun_name_passes_the_oracle(root: str, attempt: int) -> None:
    assert dns1035(rerun_name(root=root, attempt=attempt))


@given(
    st.text(max_size=40), st.integers(min_value=0, max_value=10**6), st.text(alphabet="-abc9", max_size=60)
)
def test_every_suffixed_name_passes_the_oracle_even_when_the_suffix_is_too_long(
    root: str, number: int, tail: str
) -> None:
    assert dns1035(suffixed_name(root, number, f"-{tail}"))


@pytest.mark.parametrize(
    ("root", "attempt", "name"),
    [
        ("abc123", 1, "abc123-retry-1"),
        ("a", 7, "a-retry-7"),
        ("x" * 22, 1, "x" * 22 + "-retry-1"),
        ("ab-cd", 12, "ab-cd-retry-12"),
    ],
)
def test_a_root_that_fits_gets_exactly_root_retry_n(root: str, attempt: int, name: str) -> None:
    assert rerun_name(root=root, attempt=attempt) == name


@pytest.mark.parametrize(
    ("root", "start"),
    [
        ("ABC", "abc"),  # lower-cased
        ("a_b.c", "a-b-c"),  # every other character becomes '-'
        ("1abc", "r1abc"),  # a label starts with a letter: 'r' is put first
        ("-abc", "r-abc"),
        ("éa", "r-a"),  # a non-ASCII letter is not a letter of a label
        ("abc_", "abc"),  # no '-' left at the end
        ("___", "r"),  # nothing left but the 'r'
        ("", "r"),
    ],
)
def test_a_root_that_is_not_a_label_is_sanitised_then_hashed(root: str, start: str) -> None:
    name = rerun_name(root=root, attempt=3)
    assert re.fullmatch(rf"{re.escape(start)}-[a-z0-9]+-retry-3", name), name
    assert dns1035(name)


def test_the_same_root_and_attempt_always_get_the_same_name_and_attempts_differ() -> None:
    root = "A_Root.With.Dots"
    assert rerun_name(root=root, attempt=1) == rerun_name(root=root, attempt=1)
    assert len({rerun_name(root=root, attempt=n) for n in range(1, 50)}) == 49


def test_a_suffix_too_long_for_any_root_keeps_the_head_of_the_name_and_a_hash() -> None:
    name = suffixed_name("abc", 1, "-" + "x" * 40)
    assert dns1035(name)
    assert re.fullmatch(r"abc-x+-[a-z0-9]+", name), name


def _tag_length() -> int:
    """The length of the hash the naming scheme puts in a shortened name, read off a name
    (``a-<hash>-retry-1`` for the root ``A``), so these tests hold whatever length it picks."""
    return len(rerun_name(root="A", attempt=1)) - len("a--retry-1")


def test_a_shortened_root_loses_the_dashes_where_it_was_cut() -> None:
    suffix = "-retry-1"
    room = MAX_NAME_LENGTH - len(suffix) - _tag_length() - 1
    root = "a" * (room - 1) + "-" + "b" * 20  # cut right after the '-'
    name = rerun_name(root=root, attempt=1)
    assert re.fullmatch(rf"a{{{room - 1}}}-[a-z0-9]{{{_tag_length()}}}-retry-1", name), name


def test_a_root_with_room_for_one_character_keeps_it_and_the_whole_suffix() -> None:
    suffix = "-" + "y" * (MAX_NAME_LENGTH - _tag_length() - 3)  # room for exactly 1 character of the root
    name = suffixed_name("ABC", 1, suffix)  # "ABC-yyy..." is not a name: shortened to "a"
    assert re.fullmatch(rf"a-[a-z0-9]{{{_tag_length()}}}{suffix}", name), name
    assert len(name) == MAX_NAME_LENGTH


def test_a_suffix_ending_in_a_dash_loses_it() -> None:
    assert re.fullmatch(r"abc-[a-z0-9]+-x", suffixed_name("abc", 1, "-x-")), suffixed_name("abc", 1, "-x-")


def test_with_no_room_for_the_root_the_head_of_the_name_fills_all_30_characters() -> None:
    cut = MAX_NAME_LENGTH - _tag_length() - 1
    suffix = "-" + "x" * 60
    name = suffixed_name("abc", 1, suffix)
    assert len(name) == MAX_NAME_LENGTH
    assert name.startswith(("abc" + suffix)[:cut] + "-")


def test_with_no_room_for_the_root_a_dash_where_the_head_is_cut_is_dropped() -> None:
    cut = MAX_NAME_LENGTH - _tag_length() - 1
    full = "abc-" + "x" * (cut - 5) + "-" + "y" * 60  # full[cut - 1] is the '-'
    name = suffixed_name("abc", 1, full.removeprefix("abc"))
    assert re.fullmatch(rf"{re.escape(full[: cut - 1])}-[a-z0-9]{{{_tag_length()}}}", name), name
