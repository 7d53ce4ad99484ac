"""The recipe's prune section is checked against the target before any work starts."""

from __future__ import annotations

import pytest

from edgekd.config import PruneConfig, load_recipe
from edgekd.errors import UserError
from edgekd.prune.check import check_prune_config
from edgekd.target import load_target


def test_defaults_and_a_full_recipe_pass():
    check_prune_config(PruneConfig(), load_target("x86-cpu"))  # off: nothing to check
    recipe = load_recipe(None, ["prune.enabled=True", "prune.allocation=uniform", "prune.ratio=0.3",
                                "prune.importance=taylor", "prune.target_speedup=1.5"])
    check_prune_config(recipe.prune, load_target("x86-cpu"))
    check_prune_config(PruneConfig(sparse_2_4=True), load_target("jetson-orin"))


@pytest.mark.parametrize("override, message", [
    ({"flow": "both"}, "prune.flow"),
    ({"allocation": "flops"}, "prune.allocation"),
    ({"ratio": 1.2}, "ratio"),
    ({"importance": "taylr"}, "did you mean 'taylor'"),
    ({"recovery": "distill"}, "recovery"),
    ({"target_speedup": 0.8}, "target_speedup"),
    ({"max_steps": 0}, "max_steps"),
    ({"min_speedup": 5.0}, "min_speedup"),
    ({"max_accuracy_drop_pt": -1.0}, "max_accuracy_drop_pt"),
])
def test_bad_values_are_one_line_user_errors(override, message):
    with pytest.raises(UserError, match=message):
        check_prune_config(PruneConfig(enabled=True, **override), load_target("x86-cpu"))


def test_2_4_only_where_the_target_runs_it():
    with pytest.raises(UserError, match="does not run 2:4"):
        check_prune_config(PruneConfig(sparse_2_4=True), load_target("x86-cpu"))
