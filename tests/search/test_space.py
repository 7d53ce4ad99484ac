"""The search space: every family's records build, respect the channel multiple, and the
latency table's blocks cover every record the space can produce."""

from __future__ import annotations

import pytest

from edgekd.config import SearchConfig, load_recipe
from edgekd.errors import UserError
from edgekd.models import build_model
from edgekd.models.blocks import block_key, layer_plan
from edgekd.search.space import (
    check_space,
    record_key,
    sample_records,
    space_block_specs,
)


def small_space(**changes) -> SearchConfig:
    settings = SearchConfig(families=["resnet", "mobilenet"], width_multipliers=[0.5, 1.0], depth_options=[1, 2],
                            kernel_options=[3, 5], expand_options=[3, 6], se_options=[False, True])
    for key, value in changes.items():
        setattr(settings, key, value)
    return settings


def test_sampled_records_build_and_round_to_the_channel_multiple():
    records = sample_records(small_space(), n=12, seed=0, channel_multiple=8)
    assert len({record_key(r) for r in records}) == 12
    assert {r["family"] for r in records} == {"resnet", "mobilenet"}
    for record in records:
        widths = record["widths"] if record["family"] == "resnet" else [s["width"] for s in record["stages"]]
        assert all(w % 8 == 0 for w in widths + [record["stem"]])
        model = build_model(record, 1, 10)
        assert model(__import__("torch").zeros(2, 1, 8, 8)).shape == (2, 10)


def test_sampling_is_reproducible_from_the_seed():
    first = sample_records(small_space(), n=5, seed=3, channel_multiple=8)
    again = sample_records(small_space(), n=5, seed=3, channel_multiple=8)
    assert [record_key(r) for r in first] == [record_key(r) for r in again]


def test_table_blocks_cover_every_record_of_the_space():
    settings = small_space()
    table = {block_key(spec) for spec in space_block_specs(settings, 1, 10, (8, 8), 8)}
    for record in sample_records(settings, n=25, seed=1, channel_multiple=8):
        assert {block_key(spec) for spec in layer_plan(record, 1, 10, (8, 8))} <= table


def test_teacher_derived_records_are_sampled_and_covered():
    derived = [{"family": "resnet", "stem": 16, "widths": [16, 32, 48], "depths": [1, 2, 1], "origin": "teacher-derived"}]
    settings = small_space(families=["teacher-derived"])
    records = sample_records(settings, n=1, seed=0, channel_multiple=8, derived=derived)
    assert records == derived
    table = {block_key(spec) for spec in space_block_specs(settings, 1, 10, (8, 8), 8, derived=derived)}
    assert {block_key(spec) for spec in layer_plan(derived[0], 1, 10, (8, 8))} <= table


@pytest.mark.parametrize("override, message", [
    ("search.families=['vit']", "search.families 'vit' is unknown"),
    ("search.families=[]", "search.families is empty"),
    ("search.depth_options=[]", "search.depth_options is empty"),
    ("search.width_multipliers=[0.0]", r"search.width_multipliers must be > 0, got \[0.0\]"),
])
def test_a_recipe_whose_space_cannot_be_searched_fails_when_loaded(override, message):
    with pytest.raises(UserError, match=message):
        load_recipe(None, [override])


@pytest.mark.parametrize("change, message", [
    ({"kernel_options": [4]}, "odd"),
    ({"base": "resnet_q"}, "resnet_q"),
])
def test_a_space_that_cannot_be_searched_fails_early(change, message):
    with pytest.raises(UserError, match=message):
        check_space(small_space(**change))
