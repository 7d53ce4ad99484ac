"""The student search space: which architectures a search may pick, as records.

Three families (recipe `search.families`):
- "resnet": the base resnet record (`search.base`) with one width multiplier for the whole net
  and a depth per stage;
- "mobilenet": the base inverted-residual record (`search.mobilenet_base`) with one width
  multiplier and, per stage, depth, kernel, expansion and squeeze-excitation;
- "teacher-derived": the teacher with blocks removed and channels thinned (N2N-style,
  edgekd/models/derived.py); for a built-in teacher these are ordinary records, for any other
  traceable teacher module "derived" records that build from the teacher
  (edgekd/models/student.py). Either way search lists them up front and a trial picks one by
  index.

One width multiplier per net (not per stage), as in MobileNet: the first block of a stage then has
one possible input width per multiplier, which keeps the latency table small enough to measure.
Every record's widths are rounded to the target's fast channel multiple.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from typing import Any

from edgekd.config import SearchConfig
from edgekd.errors import UserError
from edgekd.models import resolve_arch, scale_width

log = logging.getLogger(__name__)



def record_key(record: dict[str, Any]) -> str:
    """One string per architecture (ignoring its display name), for deduplication and caches."""
    return json.dumps({k: v for k, v in record.items() if k != "name"}, sort_keys=True, separators=(",", ":"))


# From this input side (px) on, "auto" bases are the 224-style architectures.
LARGE_INPUT_PX = 96
AUTO_BASES = {False: ("resnet_s", "mobilenet_s"), True: ("resnet_s_224", "mobilenet_224")}


def for_input(settings: SearchConfig, input_shape: tuple[int, ...]) -> SearchConfig:
    """The settings with "auto" bases resolved for images of `input_shape` (C, H, W)."""
    resnet, mobilenet = AUTO_BASES[min(input_shape[1:]) >= LARGE_INPUT_PX]
    return dataclasses.replace(settings, base=resnet if settings.base == "auto" else settings.base,
                               mobilenet_base=mobilenet if settings.mobilenet_base == "auto" else settings.mobilenet_base)


def resnet_base(settings: SearchConfig) -> dict[str, Any]:
    """The resnet family's base record; "auto" unresolved (settings not yet fitted to an input
    size by for_input) means the small-image base."""
    return resolve_arch(AUTO_BASES[False][0] if settings.base == "auto" else settings.base)


def mobilenet_base(settings: SearchConfig) -> dict[str, Any]:
    return resolve_arch(AUTO_BASES[False][1] if settings.mobilenet_base == "auto" else settings.mobilenet_base)


def check_space(settings: SearchConfig) -> None:
    """Fail before any work on a space that cannot be searched: what the recipe's value rules
    (edgekd/config.py) cannot say alone, the architecture names and odd kernel sizes."""
    if any(k % 2 == 0 or k < 1 for k in settings.kernel_options):
        raise UserError(f"search.kernel_options must be odd, got {settings.kernel_options}")
    resnet_base(settings)
    if "mobilenet" in settings.families:
        mobilenet_base(settings)


def resnet_record(settings: SearchConfig, width: float, depths: list[int], channel_multiple: int) -> dict[str, Any]:
    base = resnet_base(settings)
    base.pop("name", None)
    return scale_width({**base, "depths": list(depths)}, width, channel_multiple)


def mobilenet_record(settings: SearchConfig, width: float, stages: list[dict[str, Any]], channel_multiple: int) -> dict[str, Any]:
    """`stages` gives per-stage depth/kernel/expand/se; widths and strides come from the base."""
    base = mobilenet_base(settings)
    base.pop("name", None)
    record = copy.deepcopy(base)
    for stage, choice in zip(record["stages"], stages):
        stage.update(choice)
    return scale_width(record, width, channel_multiple)


def suggest_record(trial, settings: SearchConfig, channel_multiple: int, derived: list[dict[str, Any]]) -> dict[str, Any]:
    """One architecture from an Optuna trial. Parameter names are fixed per family, so NSGA-II
    crosses over the choices the trials share."""
    families = [f for f in settings.families if f != "teacher-derived" or derived]
    family = trial.suggest_categorical("family", families)
    if family == "teacher-derived":
        index = trial.suggest_int("derived_index", 0, len(derived) - 1)
        return copy.deepcopy(derived[index])
    width = trial.suggest_categorical(f"{family}_width", settings.width_multipliers)
    if family == "resnet":
        stages = len(resnet_base(settings)["depths"])
        depths = [trial.suggest_categorical(f"resnet_depth{i}", settings.depth_options) for i in range(stages)]
        return resnet_record(settings, width, depths, channel_multiple)
    choices = []
    for i in range(len(mobilenet_base(settings)["stages"])):
        choices.append({
            "depth": trial.suggest_categorical(f"mobilenet_depth{i}", settings.depth_options),
            "kernel": trial.suggest_categorical(f"mobilenet_kernel{i}", settings.kernel_options),
            "expand": trial.suggest_categorical(f"mobilenet_expand{i}", settings.expand_options),
            "se": trial.suggest_categorical(f"mobilenet_se{i}", settings.se_options),
        })
    return mobilenet_record(settings, width, choices, channel_multiple)


def covering_records(settings: SearchConfig, channel_multiple: int, derived: list[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Few records whose blocks, together, are every block any record of the space can contain.

    A stage's blocks are its first block (which depends on the width multiplier and the stage's
    own choices) and copies of one repeated block, so the deepest record per (multiplier, per-stage
    choice) covers every shallower one. The latency table is built from these records' blocks.
    """
    records: list[dict[str, Any]] = []
    deepest = max(settings.depth_options)
    for width in settings.width_multipliers:
        if "resnet" in settings.families:
            stages = len(resnet_base(settings)["depths"])
            records.append(resnet_record(settings, width, [deepest] * stages, channel_multiple))
        if "mobilenet" in settings.families:
            stages = len(mobilenet_base(settings)["stages"])
            for kernel in settings.kernel_options:
                for expand in settings.expand_options:
                    for se in settings.se_options:
                        choice = {"depth": deepest, "kernel": kernel, "expand": expand, "se": se}
                        records.append(mobilenet_record(settings, width, [choice] * stages, channel_multiple))
    if "teacher-derived" in settings.families:
        records.extend(r for r in derived if r.get("family") != "derived")  # module-derived: no plan
    return records


def space_block_specs(
    settings: SearchConfig,
    in_channels: int,
    num_classes: int,
    input_hw: tuple[int, int],
    channel_multiple: int,
    derived: list[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Every distinct block spec (edgekd/models/blocks.py) of the space, in a stable order."""
    from edgekd.models.blocks import block_key, layer_plan

    specs: dict[str, dict[str, Any]] = {}
    for record in covering_records(settings, channel_multiple, derived):
        for spec in layer_plan(record, in_channels, num_classes, input_hw):
            specs.setdefault(block_key(spec), spec)
    log.debug("search space: %d distinct blocks", len(specs))
    return list(specs.values())


def sample_records(settings: SearchConfig, n: int, seed: int, channel_multiple: int, derived: list[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """`n` distinct records drawn uniformly from the space (benchmarks, predictor checks)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(n * 50):
        if len(seen) == n:
            break
        trial = study.ask()
        record = suggest_record(trial, settings, channel_multiple, list(derived))
        seen.setdefault(record_key(record), record)
        study.tell(trial, 0.0)
    return list(seen.values())
