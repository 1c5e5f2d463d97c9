import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtl_model.data import parse_label_cell, parse_wide_cell

label_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=',[]"'), min_size=1
).filter(lambda name: name.strip() == name and name)


@pytest.mark.parametrize(
    "cell, expected",
    [
        (None, None),
        (float("nan"), None),
        ("", None),
        ("   ", None),
        ("[]", []),
        ([], []),
        ("joy", ["joy"]),
        ("joy, love", ["joy", "love"]),
        ('["joy", "love"]', ["joy", "love"]),
        ("[3, 5]", [3, 5]),
        ([3, 5], [3, 5]),
        (7, [7]),
        (["NA", "None"], ["NA", "None"]),
    ],
)
def test_parse_label_cell_forms(cell, expected):
    assert parse_label_cell(cell) == expected


@pytest.mark.parametrize(
    "cell, message",
    [
        ("joy,,love", "empty label"),
        ("[joy", "not a JSON list"),
        ('{"a": 1}', None),
        (True, "boolean"),
        ([1.5], "name or an integer id"),
        ([""], "empty"),
        (3.5, "expected a list or a string"),
    ],
)
def test_parse_label_cell_rejects(cell, message):
    if message is None:  # a string that is not a list is a single label name, braces and all
        assert parse_label_cell(cell) == ['{"a": 1}']
        return
    with pytest.raises(ValueError, match=message):
        parse_label_cell(cell)


@given(st.lists(label_names, min_size=1, max_size=6))
def test_delimited_string_round_trips(labels):
    assert parse_label_cell(",".join(labels)) == [label.strip() for label in labels]


@given(st.lists(st.one_of(label_names, st.integers(min_value=0, max_value=10**6)), max_size=6))
def test_list_cells_round_trip(labels):
    assert parse_label_cell(labels) == labels


@given(st.lists(label_names, min_size=1, max_size=6), st.sampled_from([";", "|", "\t"]))
def test_custom_delimiter(labels, delimiter):
    labels = [label for label in labels if delimiter not in label] or ["x"]
    assert parse_label_cell(delimiter.join(labels), delimiter) == [label.strip() for label in labels]


@pytest.mark.parametrize(
    "cell, expected",
    [(0, 0), (1, 1), (True, 1), (False, 0), (1.0, 1), ("1", 1), ("0", 0), ("true", 1), ("", None), (None, None)],
)
def test_parse_wide_cell(cell, expected):
    assert parse_wide_cell(cell) == expected


@pytest.mark.parametrize("cell", [2, "yes", 0.5, "x"])
def test_parse_wide_cell_rejects(cell):
    with pytest.raises(ValueError, match="expected 0 or 1"):
        parse_wide_cell(cell)


def test_parse_wide_cell_nan_is_missing():
    assert parse_wide_cell(math.nan) is None
