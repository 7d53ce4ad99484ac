"""Targets and recipes as dataclasses, loaded from YAML with `safe_load`.

Unknown keys are errors with a hint, and `--set stage.key=value` overrides are parsed with
`ast.literal_eval` and type-checked against the field's default, so a typo never passes silently.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgekd.errors import UserError


@dataclass
class BenchConfig:
    warmup: int = 50
    runs: int = 300
    throughput_batch: int = 32
    throughput_runs: int = 50
    threads: int | None = None


@dataclass
class TeacherConfig:
    """How edgekd trains a teacher when the user gives none (the embedded default)."""

    arch: str = "resnet_l"
    epochs: int = 12
    lr: float = 0.003
    batch_size: int = 64
    patience: int = 4


@dataclass
class SearchConfig:
    # The space: which families, and the choices within them (edgekd/search/space.py).
    # "teacher-derived" is the teacher with blocks removed and channels thinned (N2N-style).
    families: list[str] = field(default_factory=lambda: ["resnet", "mobilenet", "teacher-derived"])
    base: str = "resnet_s"  # the resnet family's reference architecture (widths x multiplier)
    mobilenet_base: str = "mobilenet_s"  # the inverted-residual family's reference architecture
    width_multipliers: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 1.5, 2.0])
    depth_options: list[int] = field(default_factory=lambda: [1, 2])  # per stage
    kernel_options: list[int] = field(default_factory=lambda: [3, 5])  # mobilenet, per stage
    expand_options: list[int] = field(default_factory=lambda: [3, 6])  # mobilenet, per stage
    se_options: list[bool] = field(default_factory=lambda: [False, True])  # mobilenet, per stage
    # Score without training (edgekd/search/proxies.py): diswot, naswot, synflow, params, macs.
    # params by default because it ranked distilled students best in our measurement: Kendall tau
    # 0.78 against KD accuracy on Fashion-MNIST (16 students), DisWOT 0.18, SynFlow 0.18, NASWOT
    # 0.07 (benchmarks/results/proxy-correlation/results.md).
    score: str = "params"
    proxy_batch: int = 64  # training images the proxies look at
    # Latency of each trial: "predicted" (the target's table from `edgekd lut`; blocks the table
    # lacks are timed first), "measured" (export and time every candidate: ~3 s each on a 2-core
    # CPU), or "auto": predicted when the target has a table at this input size, else measured.
    # Finalists are always measured on the device.
    latency: str = "auto"
    trials: int = 60  # Optuna trials (NSGA-II, score up and latency down); a repeated arch is not re-evaluated
    population: int = 16  # NSGA-II population per generation
    finalists: int = 4  # best-scoring fitting candidates measured on the device
    max_attempts: int = 3  # students tried when the shipped artifact misses the budget
    # Pick candidates whose measured latency is at most margin x budget: timing on a shared CPU
    # varies by ~10-15% between runs, and the final artifact is measured again in bench.
    latency_margin: float = 0.8
    # With no --budget-ms, the budget is the teacher's measured latency / default_speedup. 2.5,
    # not 2: the teacher's own p50 moves ~15% between the search and bench stages on a busy CPU,
    # and a student picked at exactly 2x could then measure under 2x in the report.
    default_speedup: float = 2.5
    warmup: int = 20
    runs: int = 100


@dataclass
class DistillConfig:
    epochs: int = 40
    qat_epochs: int = 8
    batch_size: int = 64
    lr: float = 0.003
    qat_lr: float = 0.0002
    weight_decay: float = 0.0001
    # KD loss, a name in edgekd.distill.losses.KD_LOSSES: "hinton" (alpha * KD + (1 - alpha) * CE),
    # "dist" (CE + DIST, Huang et al. 2022) or "dkd" (CE + DKD, Zhao et al. 2022)
    loss: str = "hinton"
    temperature: float = 4.0  # every loss's temperature (T; DIST's tau)
    alpha: float = 0.9  # hinton only: weight of the KD term; 1 - alpha weighs the label loss
    dist_beta: float = 1.0  # dist: weight of the inter-class relation term
    dist_gamma: float = 1.0  # dist: weight of the intra-class relation term
    dkd_alpha: float = 1.0  # dkd: weight of TCKD (target-class KD)
    dkd_beta: float = 8.0  # dkd: weight of NCKD (non-target-class KD)
    patience: int = 8
    calibration_samples: int = 300
    # Feature KD added to the logit loss (edgekd/distill/feature_losses.py): null (none), "fitnets" (FitNets:
    # 1x1 conv regressors, MSE), "at" (attention transfer) or "nd" (ND loss, on the classifier's
    # input). It costs one teacher forward per training step: teacher features are not cached.
    feature_loss: str | None = None
    feature_weight: float | None = None  # null: the paper's reference weight (fitnets 100, at 1000, nd 1)
    # Student module names (model.named_modules()); null: each stage's output (the last block of
    # the stage) for fitnets/at, the classifier for nd
    feature_layers: list[str] | None = None
    # Teacher module names, paired in order with feature_layers; null: the same names as
    # feature_layers when those are given, else the defaults paired by spatial size
    teacher_layers: list[str] | None = None
    # Student's starting weights: "random", "teacher" (a teacher-derived student starts from the
    # teacher's kept weights) or the path of a state dict (edgekd/distill/student_init.py)
    init: str = "random"
    # Deterministic augmentation (edgekd.data.augment): random shifts of up to augment_shift_px
    # (null: 1/8 of the image side) and, if asked, horizontal flips (wrong for digits and text).
    # The teacher's outputs on each augmented epoch are cached on disk (edgekd.distill.teacher_outputs).
    augment: bool = False
    augment_shift_px: int | None = None
    augment_hflip: bool = False
    # Teacher outputs kept per sample: the top-k classes' log-probabilities (0: all, exact)
    teacher_top_k: int = 0
    teacher_cache_dtype: str = "float32"  # or "float16": ~30% less disk, losses within ~1e-4
    # INT8: "qat" (PTQ-initialised, then trained with the KD loss) or "ptq" (calibration only)
    mode: str = "qat"
    # A calibration manifest (calibration/README.md); null: the first calibration_samples
    # training images
    calibration: str | None = None
    # Per-layer sensitivity (edgekd/quantizers/sensitivity.py): layers whose INT8 costs more than
    # this many val accuracy points stay in float, and what each costs in latency is measured.
    # null: no analysis (every conv/linear quantized). sensitivity_layers: the layers to analyse
    # (null: every conv and linear layer)
    sensitivity_threshold_pt: float | None = None
    sensitivity_layers: list[str] | None = None


@dataclass
class PruneConfig:
    """The prune stage (edgekd/prune): structured channels removed from the distilled fp32 student
    (or 2:4 sparsity on TensorRT targets), accuracy recovered, and a gate on the exported artifact."""

    enabled: bool = False
    # "search": prune the student search chose, closing the gap to the budget (search leaves
    # headroom); "teacher": prune the teacher itself (or a teacher-derived student) down to the
    # budget with no architecture search.
    flow: str = "search"
    # Per-group ratios: "latency" (NetAdapt-style: channels go where they buy the most latency on
    # the target, measured or predicted), or one ratio: "uniform" (every group), "global" /
    # "isomorphic" (Torch-Pruning's global ranking over all groups / among groups of one structure)
    allocation: str = "latency"
    ratio: float = 0.5  # uniform/global/isomorphic: fraction of the channels removed
    importance: str = "magnitude"  # which channels go: magnitude, taylor, bn_scale or lamp
    # Latency goal of allocation "latency": unpruned latency / target_speedup; null: the budget
    target_speedup: float | None = None
    max_steps: int = 8  # latency: at most this many steps (each times every group once)
    ignored_layers: list[str] = field(default_factory=list)  # module names kept whole
    # Recovery: "kd" (the distill loss from the teacher), "labels" (cross-entropy) or "none"
    recovery: str = "kd"
    recovery_epochs: int = 4
    recovery_lr: float = 0.001
    # The gate, on the exported artifact: roll back unless latency drops by min_speedup (a
    # fraction) and accuracy drops by at most max_accuracy_drop_pt points
    min_speedup: float = 0.05
    max_accuracy_drop_pt: float = 1.0
    # 2:4 sparsity where the target's kernels run it (Target.sparse_2_4), on layers with at least
    # sparse_min_channels input (x kernel area) and output channels (NVIDIA/TensorRT#3849)
    sparse_2_4: bool = False
    sparse_min_channels: int = 256


@dataclass
class Recipe:
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)


def load_recipe(path: str | Path | None, overrides: list[str] = (), bench_defaults: BenchConfig | None = None) -> Recipe:
    """Defaults, then the target's bench protocol, then the recipe file, then `--set` overrides."""
    data: dict[str, Any] = {}
    if bench_defaults is not None:
        data["bench"] = dataclasses.asdict(bench_defaults)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"recipe file '{path}' does not exist")
        for section, values in read_yaml_mapping(path).items():
            if not isinstance(values, dict):
                raise UserError(f"{path}: section {section!r} must be a mapping")
            data.setdefault(section, {}).update(values)
    recipe = from_mapping(Recipe, data, where=str(path or "recipe"))
    for item in overrides:
        apply_override(recipe, item)
    return recipe


def apply_override(recipe: Recipe, item: str) -> None:
    """Apply one `section.key=value` override in place, type-checked against the field."""
    key, sep, raw = item.partition("=")
    section_name, dot, field_name = key.strip().partition(".")
    if not sep or not dot:
        raise UserError(f"--set {item!r}: expected section.key=value, e.g. distill.epochs=5")
    section = _get_field(recipe, section_name, "recipe")
    _get_field(section, field_name, section_name)
    raw = raw.strip()
    if raw.lower() in ("null", "none"):
        value = None  # YAML's spelling and Python's both mean "unset"
    else:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare word is a string: --set search.base=resnet_xs
    hint = typing.get_type_hints(type(section))[field_name]
    setattr(section, field_name, _check_type(value, hint, f"{section_name}.{field_name}"))


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    return from_mapping(Recipe, data, where="saved recipe")


def recipefrom_mapping(data: dict[str, Any]) -> Recipe:
    return from_mapping(Recipe, data, where="saved recipe")


def read_yaml_mapping(path: Path, *, hint: str = "") -> dict[str, Any]:
    """A YAML file that must hold a mapping, read with safe_load (no code-running tags); any
    other content is a UserError naming the file (and `hint`, e.g. where the format is described)."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a YAML mapping{hint}")
    return data


def _get_field(obj: Any, name: str, where: str) -> Any:
    names = [f.name for f in dataclasses.fields(obj)]
    if name not in names:
        raise UserError(_unknown_key_message(name, names, where))
    return getattr(obj, name)


def _unknown_key_message(name: str, names: list[str], where: str) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{where}: unknown key {name!r}{hint} (known: {', '.join(names)})"


def from_mapping(cls: type, data: dict[str, Any], where: str) -> Any:
    """An instance of dataclass `cls` from a mapping: unknown keys, wrong types and missing required
    keys are UserErrors naming `where`; nested dataclass fields are read from nested mappings."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise UserError(_unknown_key_message(key, list(fields), where))
        nested = _nested_dataclass(cls, key)
        if nested is not None:
            if not isinstance(value, dict):
                raise UserError(f"{where}: {key!r} must be a mapping")
            value = from_mapping(nested, value, f"{where}: {key}")
        else:
            value = _check_type(value, hints[key], f"{where}: {key}")
        kwargs[key] = value
    missing = [name for name, f in fields.items() if name not in kwargs and _is_required(f)]
    if missing:
        raise UserError(f"{where}: missing required keys {missing}")
    return cls(**kwargs)


def _nested_dataclass(cls: type, name: str) -> type | None:
    for f in dataclasses.fields(cls):
        if f.name == name and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
            if dataclasses.is_dataclass(default):
                return type(default)
    return None


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _check_type(value: Any, hint: Any, name: str) -> Any:
    """Check a value against a field's annotation: str, int, float (ints accepted), bool,
    list[T], and `T | None`. bool is not accepted as an int, though Python says it is one."""
    if _matches(value, hint):
        return float(value) if hint is float else value
    raise UserError(f"{name} must be {_describe(hint)}, got {value!r}")


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if h is type(None) else _describe(h) for h in typing.get_args(hint))
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    return getattr(hint, "__name__", str(hint))
