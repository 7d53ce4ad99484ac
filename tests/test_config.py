"""Targets and recipes: YAML loading, unknown keys with hints, and type-checked --set overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgekd.config import (
    BenchConfig,
    Recipe,
    apply_override,
    load_recipe,
    recipe_from_dict,
    to_dict,
)
from edgekd.errors import UserError
from edgekd.target import Target, known_targets, load_target, target_from_dict

X86_YAML = Path(__file__).resolve().parent.parent / "targets" / "x86-cpu.yaml"


def _target_yaml(**changes: object) -> str:
    """The x86-cpu file as a dict with changes, dumped back to YAML (None value = drop key)."""
    import yaml

    data = yaml.safe_load(X86_YAML.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return yaml.safe_dump(data)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- targets --------------------------------------------------------------------------------


def test_x86_cpu_target_fields():
    target = load_target("x86-cpu")
    assert isinstance(target, Target)
    assert target.name == "x86-cpu"
    assert target.backend == "openvino"
    assert target.device == "CPU"
    assert target.precisions == ["fp32", "int8"]
    assert target.precision == "int8"
    assert target.quantizer == "nncf"
    assert target.channel_multiple == 16  # measured: benchmarks/results/channel-multiple
    assert target.runner == "local"
    assert target.bench == BenchConfig(warmup=50, runs=300, throughput_batch=32, throughput_runs=50, threads=None)


def test_known_targets_lists_x86_cpu():
    assert "x86-cpu" in known_targets()


def test_unknown_target_suggests_close_name_and_lists_known():
    with pytest.raises(UserError) as info:
        load_target("x86-cpuu")
    message = str(info.value)
    assert "unknown target 'x86-cpuu'" in message
    assert "did you mean 'x86-cpu'?" in message
    assert "known:" in message and "x86-cpu" in message.split("known:")[1]


def test_unknown_target_without_close_match_has_no_hint():
    with pytest.raises(UserError) as info:
        load_target("zzzzzz")
    assert "did you mean" not in str(info.value)
    assert "known:" in str(info.value)


def test_target_from_yaml_path(tmp_path):
    path = _write(tmp_path, "my-board.yaml", _target_yaml(name="my-board", channel_multiple=16))
    target = load_target(str(path))
    assert target.name == "my-board"
    assert target.channel_multiple == 16
    assert target.precision == "int8"
    # .yml works too
    yml = _write(tmp_path, "other.yml", _target_yaml(name="other"))
    assert load_target(str(yml)).name == "other"


def test_missing_target_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_target(str(tmp_path / "nope.yaml"))


def test_unknown_key_in_target_file_names_key_and_hint(tmp_path):
    text = _target_yaml(channel_multiple=None) + "chanel_multiple: 8\n"
    path = _write(tmp_path, "t.yaml", text)
    with pytest.raises(UserError) as info:
        load_target(str(path))
    message = str(info.value)
    assert "unknown key 'chanel_multiple'" in message
    assert "did you mean 'channel_multiple'?" in message
    assert str(path) in message


def test_unknown_key_in_target_bench_section(tmp_path):
    text = _target_yaml(bench={"warmup": 1, "run": 5})
    path = _write(tmp_path, "t.yaml", text)
    with pytest.raises(UserError) as info:
        load_target(str(path))
    assert "unknown key 'run'" in str(info.value)
    assert "did you mean 'runs'?" in str(info.value)


def test_target_missing_required_key(tmp_path):
    path = _write(tmp_path, "t.yaml", _target_yaml(backend=None))
    with pytest.raises(UserError, match="missing required keys.*backend"):
        load_target(str(path))


def test_invalid_yaml_is_user_error(tmp_path):
    path = _write(tmp_path, "t.yaml", "name: [unclosed\nbackend: x\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_target(str(path))


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = _write(tmp_path, "t.yaml", "- just\n- a list\n")
    with pytest.raises(UserError, match="must hold a YAML mapping"):
        load_target(str(path))


def test_precision_not_in_precisions(tmp_path):
    path = _write(tmp_path, "t.yaml", _target_yaml(precisions=["fp32"], precision="int8"))
    with pytest.raises(UserError, match="precision 'int8' is not in precisions"):
        load_target(str(path))


def test_wrong_type_for_defaulted_target_key(tmp_path):
    path = _write(tmp_path, "t.yaml", _target_yaml(channel_multiple="eight"))
    with pytest.raises(UserError, match="channel_multiple must be int"):
        load_target(str(path))


def test_precisions_must_be_a_list(tmp_path):
    path = _write(tmp_path, "t.yaml", _target_yaml(precisions="int8", precision="int8"))
    with pytest.raises(UserError):
        load_target(str(path))


def test_python_object_tag_is_rejected_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    text = f"!!python/object/apply:os.system ['touch {marker}']\n"
    path = _write(tmp_path, "evil.yaml", text)
    with pytest.raises(UserError, match="not valid YAML"):
        load_target(str(path))
    assert not marker.exists()

    recipe = _write(tmp_path, "evil-recipe.yaml", f"distill: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(recipe)
    assert not marker.exists()


def test_target_round_trips_through_dict():
    target = load_target("x86-cpu")
    assert target_from_dict(to_dict(target)) == target


# ---- recipes --------------------------------------------------------------------------------


def test_default_recipe():
    recipe = load_recipe(None)
    assert recipe == Recipe()
    assert recipe_from_dict(to_dict(recipe)) == recipe


def test_target_bench_defaults_flow_into_recipe_and_recipe_file_overrides(tmp_path):
    bench = BenchConfig(warmup=7, runs=11, throughput_batch=4, throughput_runs=3, threads=2)
    recipe = load_recipe(None, bench_defaults=bench)
    assert recipe.bench == bench

    path = _write(tmp_path, "r.yaml", "bench:\n  runs: 99\ndistill:\n  epochs: 3\n  lr: 1\n")
    recipe = load_recipe(path, bench_defaults=bench)
    # the file's key wins, the target's other bench values stay
    assert recipe.bench == dataclasses.replace(bench, runs=99)
    assert recipe.distill.epochs == 3
    assert recipe.distill.lr == 1.0 and isinstance(recipe.distill.lr, float)
    # and --set beats both
    recipe = load_recipe(path, ["bench.runs=5"], bench_defaults=bench)
    assert recipe.bench.runs == 5


def test_x86_target_bench_into_recipe():
    target = load_target("x86-cpu")
    recipe = load_recipe(None, bench_defaults=target.bench)
    assert recipe.bench == target.bench
    # a copy: changing the recipe does not change the target
    recipe.bench.runs = 1
    assert target.bench.runs == 300


def test_missing_recipe_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


def test_unknown_key_in_recipe_file(tmp_path):
    path = _write(tmp_path, "r.yaml", "distill:\n  epoch: 3\n")
    with pytest.raises(UserError) as info:
        load_recipe(path)
    assert "unknown key 'epoch'" in str(info.value)
    assert "did you mean 'epochs'?" in str(info.value)


def test_unknown_section_in_recipe_file(tmp_path):
    path = _write(tmp_path, "r.yaml", "distil:\n  epochs: 3\n")
    with pytest.raises(UserError) as info:
        load_recipe(path)
    assert "unknown key 'distil'" in str(info.value)
    assert "did you mean 'distill'?" in str(info.value)


def test_recipe_section_must_be_mapping(tmp_path):
    path = _write(tmp_path, "r.yaml", "distill: 3\n")
    with pytest.raises(UserError, match="must be a mapping"):
        load_recipe(path)


def test_recipe_file_wrong_type(tmp_path):
    path = _write(tmp_path, "r.yaml", "distill:\n  epochs: 2.5\n")
    with pytest.raises(UserError, match="epochs must be int"):
        load_recipe(path)


def test_invalid_recipe_yaml(tmp_path):
    path = _write(tmp_path, "r.yaml", "distill: {epochs: 3\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(path)


# ---- --set overrides --------------------------------------------------------------------------


def test_overrides_of_each_type():
    recipe = load_recipe(
        None,
        [
            "distill.epochs=5",
            "distill.lr=0.01",
            "distill.alpha=1",  # an int is accepted for a float field, as a float
            "search.width_multipliers=[0.5, 1.0]",
            "search.depth_options=[1]",
            "search.base=resnet_xs",  # a bare word is a string
            "teacher.arch='resnet_s'",  # a quoted string too
            " bench.threads = 3 ",
        ],
    )
    assert recipe.distill.epochs == 5
    assert recipe.distill.lr == 0.01
    assert recipe.distill.alpha == 1.0 and isinstance(recipe.distill.alpha, float)
    assert recipe.search.width_multipliers == [0.5, 1.0]
    assert recipe.search.depth_options == [1]
    assert recipe.search.base == "resnet_xs"
    assert recipe.teacher.arch == "resnet_s"
    assert recipe.bench.threads == 3


def test_threads_accepts_none():
    recipe = load_recipe(None, ["bench.threads=None"])
    assert recipe.bench.threads is None


def test_apply_override_in_place():
    recipe = Recipe()
    apply_override(recipe, "distill.patience=2")
    assert recipe.distill.patience == 2


@pytest.mark.parametrize(
    "item, match",
    [
        ("distill.epochs=2.5", "distill.epochs must be int"),
        ("distill.epochs=True", "distill.epochs must be int"),
        ("distill.epochs=x", "distill.epochs must be int"),
        ("distill.lr=x", "distill.lr must be float"),
        ("distill.lr='x'", "distill.lr must be float"),
        ("distill.lr=True", "distill.lr must be float"),
        ("search.width_multipliers=0.5", "must be a list of float"),
        ("search.base=3", "search.base must be str"),
        ("bench.threads=2.0", "must be int or null"),
        ("bench.threads=True", "must be int or null"),
        ("bench.threads=x", "must be int or null"),
    ],
)
def test_wrong_types_rejected(item, match):
    recipe = Recipe()
    with pytest.raises(UserError, match=match):
        apply_override(recipe, item)
    assert recipe == Recipe()  # nothing changed


@pytest.mark.parametrize("item", ["distill.epochs", "epochs=3", "=3", "distill5", ""])
def test_malformed_override(item):
    with pytest.raises(UserError, match="expected section.key=value"):
        load_recipe(None, [item])


def test_override_unknown_key_and_section():
    with pytest.raises(UserError) as info:
        load_recipe(None, ["distill.epoch=3"])
    assert "unknown key 'epoch'" in str(info.value) and "did you mean 'epochs'?" in str(info.value)
    with pytest.raises(UserError) as info:
        load_recipe(None, ["distil.epochs=3"])
    assert "unknown key 'distil'" in str(info.value) and "did you mean 'distill'?" in str(info.value)


def test_override_unparseable_literal_is_string_then_rejected():
    with pytest.raises(UserError, match="distill.epochs must be int"):
        load_recipe(None, ["distill.epochs=[1"])


def test_threads_can_be_reset_to_none_after_an_int(tmp_path):
    path = _write(tmp_path, "r.yaml", "bench:\n  threads: 4\n")
    recipe = load_recipe(path, ["bench.threads=None"])
    assert recipe.bench.threads is None


def test_threads_accepts_null_spelling():
    recipe = load_recipe(None, ["bench.threads=null"])
    assert recipe.bench.threads is None


@pytest.mark.parametrize("name", ["x86-cpu", "jetson-orin", "jetson-orin-nano", "nvidia-gpu", "apple-m"])
def test_every_shipped_target_loads_with_its_deployed_precision_listed(name):
    target = load_target(name)
    assert target.name == name
    assert target.precision in target.precisions
