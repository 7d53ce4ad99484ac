"""The recipe: one `<Stage>Config` dataclass per stage (its word names its recipe section), loaded
from YAML with `safe_load`. Allowed values and ranges live on the fields (`at_least`, `above`,
`between`, `one_of`) and are all checked when the recipe is loaded, before any work, with the
recipe key in the message.

Unknown keys are errors with a hint, and `--set stage.key=value` overrides are parsed with
`ast.literal_eval` and type-checked against the field's default, so a typo never passes silently.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgekd.errors import UserError

# ---- allowed values ----------------------------------------------------------------------------
# The names each stage implements. They live here so that a recipe is checked before any work; the
# modules that implement them check (in tests) that they match.
KD_LOSSES = ("hinton", "dist", "dkd")  # edgekd/distill/losses.py
FEATURE_LOSSES = ("fitnets", "at", "nd")  # edgekd/distill/feature_losses.py
SCORES = ("diswot", "naswot", "synflow", "params", "macs")  # edgekd/search/proxies.py
FAMILIES = ("resnet", "mobilenet", "teacher-derived")  # edgekd/search/space.py
LATENCY_SETTINGS = ("auto", "predicted", "measured")
INT8_MODES = ("qat", "ptq")
CACHE_DTYPES = ("float32", "float16")


def at_least(minimum: float, *, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    """A field whose value (or each value of a list) must be >= minimum."""
    return _constrained(default, factory, minimum=minimum)


def above(bound: float, *, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    """A field whose value (or each value of a list) must be > bound."""
    return _constrained(default, factory, above=bound)


def between(low: float, high: float, *, default: Any = dataclasses.MISSING) -> Any:
    return _constrained(default, dataclasses.MISSING, minimum=low, maximum=high)


def one_of(choices: tuple[str, ...], *, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    """A field whose value (or each value of a list) must be one of `choices` (None passes where
    the field allows it)."""
    return _constrained(default, factory, choices=choices)


def _constrained(default: Any, factory: Any, **rule: Any) -> Any:
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=rule)
    return field(default=default, metadata=rule)


@dataclass
class BenchConfig:
    warmup: int = at_least(0, default=50)
    runs: int = at_least(1, default=300)
    throughput_batch: int = at_least(1, default=32)
    throughput_runs: int = at_least(1, default=50)
    threads: int | None = at_least(1, default=None)


IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class DataConfig:
    """How images become model inputs (edgekd/data, edgekd/models/input_adapter.py). The data
    pipeline gives every stage float32 images in [0, 1]; what the teacher was trained with
    (channel order, scale, mean/std) is the models' first op, so it is also inside every
    exported artifact."""

    # Square side the images are resized (shorter side to image_size / crop_fraction) and
    # centre-cropped to. null: the images' own size when they all share one square size, else
    # the teacher's input size where its file records one; never a silent downscale.
    image_size: int | None = at_least(4, default=None)
    crop_fraction: float = between(0.05, 1.0, default=0.875)
    # Channels the images are converted to (1: grayscale, 3: RGB). null: the data's own; a
    # teacher taking the other count is an error that names this key.
    channels: int | None = one_of((1, 3), default=None)
    # The teacher's input normalisation: (x * input_scale - mean) / std per channel, after
    # channel_order. "imagenet": the torchvision constants. null: none (the teacher takes [0, 1]).
    mean: list[float] | str | None = None
    std: list[float] | str | None = None
    input_scale: float = one_of((1.0, 255.0), default=1.0)  # 255: the teacher expects 0..255 pixels
    channel_order: str = one_of(("rgb", "bgr"), default="rgb")
    # The teacher's class order: a list of class (folder) names, or a file with one per line.
    # null: sorted folder names, as torchvision's ImageFolder.
    classes: list[str] | str | None = None
    workers: int = at_least(0, default=2)  # DataLoader processes decoding image folders
    val_fraction: float = between(0.01, 0.5, default=0.15)  # split off train when there is no val/
    test_fraction: float = between(0.01, 0.5, default=0.15)  # likewise for test/

    def normalisation(self) -> tuple[list[float], list[float]] | None:
        """(mean, std) with the "imagenet" shorthand resolved; None when there is none."""
        if self.mean is None and self.std is None:
            return None
        mean = IMAGENET_MEAN if self.mean == "imagenet" else self.mean
        std = IMAGENET_STD if self.std == "imagenet" else self.std
        return list(mean), list(std)


@dataclass
class TeacherConfig:
    """How edgekd trains a teacher when the user gives none (the embedded default)."""

    arch: str = "resnet_l"
    epochs: int = at_least(1, default=12)
    lr: float = above(0, default=0.003)
    batch_size: int = at_least(1, default=64)
    patience: int = at_least(1, default=4)


@dataclass
class SearchConfig:
    # The space: which families, and the choices within them (edgekd/search/space.py).
    # "teacher-derived" is the teacher with blocks removed and channels thinned (N2N-style).
    families: list[str] = one_of(FAMILIES, factory=lambda: ["resnet", "mobilenet", "teacher-derived"])
    # The families' reference architectures (widths x multiplier). "auto": by the input size, the
    # small-image ones below 96 px (resnet_s, mobilenet_s: stride-1 stems, 3-4 stages), else the
    # 224-style ones (resnet_s_224, mobilenet_224: stride-2 stems, 4-6 stages, overall stride 32).
    base: str = "auto"
    mobilenet_base: str = "auto"
    width_multipliers: list[float] = above(0, factory=lambda: [0.25, 0.5, 1.0, 1.5, 2.0])
    depth_options: list[int] = at_least(1, factory=lambda: [1, 2])  # per stage
    kernel_options: list[int] = at_least(1, factory=lambda: [3, 5])  # mobilenet, per stage; odd
    expand_options: list[int] = at_least(1, factory=lambda: [3, 6])  # mobilenet, per stage
    se_options: list[bool] = field(default_factory=lambda: [False, True])  # mobilenet, per stage
    # Score without training (edgekd/search/proxies.py): diswot, naswot, synflow, params, macs.
    # params by default because it ranked distilled students best in our measurement: Kendall tau
    # 0.78 against KD accuracy on Fashion-MNIST (16 students), DisWOT 0.18, SynFlow 0.18, NASWOT
    # 0.07 (benchmarks/results/proxy-correlation/results.md).
    score: str = one_of(SCORES, default="params")
    proxy_batch: int = at_least(1, default=64)  # training images the proxies look at
    # Latency of each trial: "predicted" (the target's table from `edgekd lut`; blocks the table
    # lacks are timed first), "measured" (export and time every candidate: ~3 s each on a 2-core
    # CPU), or "auto": predicted when the target has a table at this input size, else measured.
    # Finalists are always measured on the device.
    latency: str = one_of(LATENCY_SETTINGS, default="auto")
    trials: int = at_least(1, default=60)  # Optuna trials (NSGA-II, score up and latency down); a repeated arch is not re-evaluated
    population: int = at_least(2, default=16)  # NSGA-II population per generation
    finalists: int = at_least(1, default=4)  # best-scoring fitting candidates measured on the device
    max_attempts: int = at_least(1, default=3)  # students tried when the shipped artifact misses the budget
    # Pick candidates whose measured latency is at most margin x budget: timing on a shared CPU
    # varies by ~10-15% between runs, and the final artifact is measured again in bench.
    latency_margin: float = between(0.05, 1.0, default=0.8)
    # With no --budget-ms, the budget is the teacher's measured latency / default_speedup. 2.5,
    # not 2: the teacher's own p50 moves ~15% between the search and bench stages on a busy CPU,
    # and a student picked at exactly 2x could then measure under 2x in the report.
    default_speedup: float = above(0, default=2.5)
    warmup: int = at_least(0, default=20)
    runs: int = at_least(1, default=100)
    # Workers sharing a study (--storage, docs/scale-out.md): a running trial records a heartbeat
    # every heartbeat_s seconds in a database storage, and one silent for 3 x heartbeat_s is taken
    # for a dead worker's and failed (then replaced). When the study has its trials, a worker waits
    # up to wait_s seconds for other workers' running trials before it reads the front.
    heartbeat_s: int = at_least(1, default=10)
    wait_s: float = at_least(0, default=600.0)


@dataclass
class DistillConfig:
    epochs: int = at_least(1, default=40)
    qat_epochs: int = at_least(0, default=8)
    batch_size: int = at_least(1, default=64)
    lr: float = above(0, default=0.003)
    qat_lr: float = above(0, default=0.0002)
    weight_decay: float = at_least(0, default=0.0001)
    # KD loss (edgekd/distill/losses.py): "hinton" (alpha * KD + (1 - alpha) * CE),
    # "dist" (CE + DIST, Huang et al. 2022) or "dkd" (CE + DKD, Zhao et al. 2022)
    loss: str = one_of(KD_LOSSES, default="hinton")
    temperature: float = above(0, default=4.0)  # every loss's temperature (T; DIST's tau)
    alpha: float = between(0, 1, default=0.9)  # hinton only: weight of the KD term; 1 - alpha weighs the label loss
    dist_beta: float = at_least(0, default=1.0)  # dist: weight of the inter-class relation term
    dist_gamma: float = at_least(0, default=1.0)  # dist: weight of the intra-class relation term
    dkd_alpha: float = at_least(0, default=1.0)  # dkd: weight of TCKD (target-class KD)
    dkd_beta: float = at_least(0, default=8.0)  # dkd: weight of NCKD (non-target-class KD)
    patience: int = at_least(1, default=8)
    # Training steps per epoch at most (null: the whole training split): epochs of a very large
    # dataset, each a new random subset, so early stopping and QAT come round in hours, not days.
    max_steps_per_epoch: int | None = at_least(1, default=None)
    calibration_samples: int = at_least(1, default=300)
    # Feature KD added to the logit loss (edgekd/distill/feature_losses.py): null (none), "fitnets"
    # (FitNets: 1x1 conv regressors, MSE), "at" (attention transfer) or "nd" (ND loss, on the
    # classifier's input). It costs one teacher forward per training step: teacher features are not cached.
    feature_loss: str | None = one_of(FEATURE_LOSSES, default=None)
    feature_weight: float | None = at_least(0, default=None)  # null: the paper's weight (fitnets 100, at 1000, nd 1)
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
    # The teacher's outputs on each augmented epoch are cached on disk (edgekd/distill/teacher_outputs.py).
    augment: bool = False
    augment_shift_px: int | None = at_least(0, default=None)
    augment_hflip: bool = False
    # Random-resized-crop area range instead of the shift, e.g. [0.08, 1.0] (torchvision's
    # training practice for 224-px images); null: none
    augment_crop_scale: list[float] | None = between(0.01, 1.0, default=None)
    # Teacher outputs kept per sample: the top-k classes' log-probabilities (0: all, exact)
    teacher_top_k: int = at_least(0, default=0)
    teacher_cache_dtype: str = one_of(CACHE_DTYPES, default="float32")  # float16: ~30% less disk, losses within ~1e-4
    # INT8: "qat" (PTQ-initialised, then trained with the KD loss) or "ptq" (calibration only)
    mode: str = one_of(INT8_MODES, default="qat")
    # A calibration manifest (calibration/README.md); null: the first calibration_samples
    # training images
    calibration: str | None = None
    # Per-layer sensitivity (edgekd/quantizers/sensitivity.py): layers whose INT8 costs more than
    # this many val accuracy points stay in float, and what each costs in latency is measured.
    # null: no analysis (every conv/linear quantized). sensitivity_layers: the layers to analyse
    # (null: every conv and linear layer)
    sensitivity_threshold_pt: float | None = at_least(0, default=None)
    sensitivity_layers: list[str] | None = None


@dataclass
class PruneConfig:
    """The prune stage (edgekd/prune/stage.py): structured channels removed from the distilled fp32
    student (or from the teacher), or 2:4 sparsity on TensorRT targets; accuracy recovered by KD; on
    INT8 targets QAT of the pruned student; and a gate on the exported, measured artifacts."""

    enabled: bool = False
    # "search": prune the student the search chose, closing the gap to the budget; "teacher": prune
    # a copy of the teacher itself down to the budget, and ship it when it is more accurate than
    # the searched student at a latency within the budget (both are measured and reported)
    flow: str = one_of(("search", "teacher"), default="search")
    # Per-group ratios: "latency" (NetAdapt-style: channels go where they buy the most latency on
    # the target, measured or predicted), or one ratio: "uniform" (every group), "global" /
    # "isomorphic" (Torch-Pruning's global ranking over all groups / among groups of one structure)
    allocation: str = one_of(("latency", "uniform", "global", "isomorphic"), default="latency")
    ratio: float = between(0.0, 0.95, default=0.5)  # uniform/global/isomorphic: fraction of channels removed
    importance: str = one_of(("magnitude", "taylor", "bn_scale", "lamp"), default="magnitude")
    # Latency goal of allocation "latency": unpruned latency / target_speedup; null: the budget
    # (flow "search": the searched student's latency / 1.25 when it already meets the budget)
    target_speedup: float | None = above(1.0, default=None)
    max_steps: int = at_least(1, default=8)  # latency: at most this many steps (each times every group once)
    step_fraction: float = between(0.01, 0.5, default=0.125)  # latency: a group's channels removed per step
    ignored_layers: list[str] = field(default_factory=list)  # module names kept whole
    # Recovery: "kd" (the distill loss from the teacher, its cached outputs), "labels" or "none"
    recovery: str = one_of(("kd", "labels", "none"), default="kd")
    recovery_epochs: int = at_least(0, default=4)
    recovery_lr: float = above(0.0, default=0.001)
    # The gate, on the exported artifacts: roll back unless latency drops by min_speedup (a
    # fraction) and accuracy (val split, on the artifact) drops by at most max_accuracy_drop_pt points
    min_speedup: float = between(0.0, 0.99, default=0.05)
    max_accuracy_drop_pt: float = at_least(0.0, default=1.0)
    gate_rounds: int = at_least(1, default=3)  # interleaved timing rounds of both artifacts (bench's warmup/runs)
    # 2:4 sparsity where the target's kernels run it (Target.sparse_2_4), on layers with at least
    # sparse_min_channels input (x kernel area) and output channels (NVIDIA/TensorRT#3849); when on,
    # it is the stage's method instead of channel pruning (one compression per run, so the gate's
    # verdict says which one paid)
    sparse_2_4: bool = False
    sparse_min_channels: int = at_least(1, default=256)


@dataclass
class Recipe:
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)


def check_values(config: Any, section: str) -> None:
    """Every field of a config dataclass against its rule (at_least, above, between, one_of), and
    every float finite: a UserError naming the recipe key on the first value that is not allowed."""
    for f in dataclasses.fields(config):
        value, key = getattr(config, f.name), f"{section}.{f.name}" if section else f.name
        if dataclasses.is_dataclass(value):
            check_values(value, key)
            continue
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not value and (f.metadata or f.name.endswith("_options")):
            raise UserError(f"{key} is empty: give at least one choice")
        for item in values:
            _check_value(item, f.metadata, key, value)


def check_distill(settings: DistillConfig) -> None:
    """What the field rules cannot say about distillation's settings."""
    crop = settings.augment_crop_scale
    if crop is not None and (len(crop) != 2 or crop[0] > crop[1]):
        raise UserError(f"distill.augment_crop_scale must be [min, max] area fractions with min <= max, got {crop}")


def check_data(settings: DataConfig) -> None:
    """What the field rules cannot say about the normalisation."""
    for key in ("mean", "std"):
        value = getattr(settings, key)
        if isinstance(value, str) and value != "imagenet":
            raise UserError(f"data.{key} {value!r}: give one number per channel, or 'imagenet'")
        if isinstance(value, list) and not all(math.isfinite(v) for v in value):
            raise UserError(f"data.{key} must be finite numbers, got {value}")
    if (settings.mean is None) != (settings.std is None):
        raise UserError("data.mean and data.std go together: give both, or neither")
    norm = settings.normalisation()
    if norm is not None:
        mean, std = norm
        if len(mean) != len(std) or len(mean) not in (1, 3):
            raise UserError(f"data.mean and data.std need one value per channel (1 or 3 each), got {len(mean)} "
                            f"and {len(std)}")
        if any(s <= 0 for s in std):
            raise UserError(f"data.std must be > 0, got {std}")


def _check_value(item: Any, rule: Any, key: str, whole: Any) -> None:
    if item is None or isinstance(item, bool):
        return
    shown = f"{whole!r}"
    if isinstance(item, float) and not math.isfinite(item):
        raise UserError(f"{key} must be a finite number, got {shown}")
    if "choices" in rule and item not in rule["choices"]:
        names = [str(choice) for choice in rule["choices"]]
        if not isinstance(item, str):
            raise UserError(f"{key} must be one of {', '.join(names)}, got {item!r}")
        close = difflib.get_close_matches(str(item).lower(), names, n=1) if isinstance(item, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"{key} {item!r} is unknown{hint}; known: {', '.join(names)}")
    if "minimum" in rule and item < rule["minimum"]:
        raise UserError(f"{key} must be >= {rule['minimum']:g}, got {shown}")
    if "maximum" in rule and item > rule["maximum"]:
        raise UserError(f"{key} must be <= {rule['maximum']:g}, got {shown}")
    if "above" in rule and item <= rule["above"]:
        raise UserError(f"{key} must be > {rule['above']:g}, got {shown}")


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
    check_values(recipe, "")
    check_data(recipe.data)
    check_distill(recipe.distill)
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
    elif raw.lower() in ("true", "false"):
        value = raw.lower() == "true"  # YAML's spelling of a bool, as in a recipe file
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
