"""Feature knowledge distillation: losses on intermediate features, read with forward hooks.

- `fitnets`: Romero et al., ICLR 2015, "FitNets: Hints for Thin Deep Nets". A learned 1x1 conv
  regressor maps the student's feature to the teacher's channels; the loss is the mean squared
  error. Trained jointly with the logit loss (as mdistiller does), not in FitNets' separate
  hint-pretraining stage.
- `at`: Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention". The spatial
  attention map of a feature is the channel mean of its squared activations, flattened and
  L2-normalised per sample; the loss is the mean squared difference of the student's and the
  teacher's maps, summed over the layer pairs. No adapter: the map has no channel dimension.
- `nd`: Wang et al., ICCV 2023, "Improving Knowledge Distillation via Regularizing Feature Norm
  and Direction". Followed from the authors' code (WangYZ1608/Knowledge-Distillation-via-ND,
  ImageNet/train_kd.py, `DirectNormLoss` in its utils, Models/embtrans.py,
  emb_fea_distribution.py): the embedding is the classifier's input; the teacher's class centres
  are the mean teacher embedding of each class over the training set (teacher in eval mode); per
  sample, loss = 1 - <s, c_y / |c_y|> / max(|s|, |t|), averaged over the batch. Its numerator
  pulls the student's embedding towards the direction of its class centre, and dividing by the
  larger of the two norms keeps pushing the student's norm up to at least the teacher's (the
  paper's "norm and direction"). When the student's embedding is narrower than the teacher's,
  it goes through the authors' connector (BatchNorm1d, Dropout(0.5), Linear), trained with the
  student and never exported.

Spatial sizes that differ between a student and a teacher feature (fitnets, at) are matched by
average-pooling the larger map down to the smaller one.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from edgekd.config import FEATURE_LOSSES
from edgekd.errors import UserError

log = logging.getLogger(__name__)

# The weight of each loss in its reference configuration: mdistiller's CIFAR configs for FitNets
# (FITNET.LOSS.FEAT_WEIGHT 100) and AT (AT.LOSS.FEAT_WEIGHT 1000, p = 2), the ND authors'
# nd_loss_factor 1.0. Used when the recipe leaves distill.feature_weight null.
DEFAULT_WEIGHTS = {"fitnets": 100.0, "at": 1000.0, "nd": 1.0}


def check_feature_loss(name: str | None) -> None:
    """UserError for a name that is not a feature loss (None means: no feature loss)."""
    if name is None or name in FEATURE_LOSSES:
        return
    close = difflib.get_close_matches(str(name).lower(), FEATURE_LOSSES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"unknown feature KD loss {name!r}{hint}; known: {', '.join(FEATURE_LOSSES)} "
                    "(or null for none)")


# ---- the losses ------------------------------------------------------------------------------

def match_spatial(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger of two NCHW maps to the other's height and width."""
    if a.shape[-2:] == b.shape[-2:]:
        return a, b
    h, w = min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])
    return F.adaptive_avg_pool2d(a, (h, w)), F.adaptive_avg_pool2d(b, (h, w))


def fitnets_loss(student: torch.Tensor, teacher: torch.Tensor, regressor: nn.Module) -> torch.Tensor:
    """MSE between the regressed student feature and the teacher feature."""
    student, teacher = match_spatial(regressor(student), teacher)
    return F.mse_loss(student, teacher)


def attention_map(feature: torch.Tensor, p: int = 2) -> torch.Tensor:
    """[N, C, H, W] -> [N, H*W]: mean over channels of |a|^p, L2-normalised per sample."""
    return F.normalize(feature.pow(p).mean(dim=1).flatten(1), dim=1)


def attention_transfer_loss(student: torch.Tensor, teacher: torch.Tensor, p: int = 2) -> torch.Tensor:
    student, teacher = match_spatial(student, teacher)
    return (attention_map(student, p) - attention_map(teacher, p)).pow(2).mean()


def nd_loss(
    student_emb: torch.Tensor,
    teacher_emb: torch.Tensor,
    class_centers: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """Mean over the batch of 1 - <s, c_y / |c_y|> / max(|s|, |t|) (see the module docstring).
    Zero when the student's embedding points along its class centre with at least the teacher's
    norm; the authors' per-sample loop, vectorised."""
    directions = F.normalize(class_centers[labels], dim=1)
    max_norm = torch.maximum(student_emb.norm(dim=1), teacher_emb.norm(dim=1))
    return (1.0 - (student_emb * directions).sum(dim=1) / max_norm).mean()


def class_centers(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[num_classes, D]: the mean embedding of each class (zeros for a class with no sample)."""
    sums = torch.zeros(num_classes, embeddings.shape[1], dtype=embeddings.dtype)
    sums.index_add_(0, labels, embeddings)
    counts = torch.bincount(labels, minlength=num_classes).clamp(min=1).to(embeddings.dtype)
    return sums / counts[:, None]


# ---- layers and hooks ------------------------------------------------------------------------

def find_modules(model: nn.Module, names: Sequence[str], who: str) -> list[nn.Module]:
    """The submodules `names` of `model`; a missing name raises UserError listing close names."""
    modules = dict(model.named_modules())
    found = []
    for name in names:
        if name not in modules or not name:
            close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
            hint = f"; close names: {', '.join(close)}" if close else ""
            top = sorted({n.split('.')[0] for n in modules if n})
            raise UserError(
                f"feature KD layer {name!r} does not exist in the {who}{hint} "
                f"(its top-level modules: {', '.join(top)}); set distill.feature_layers / "
                "distill.teacher_layers to module names from model.named_modules()")
        found.append(modules[name])
    return found


class FeatureTap:
    """Forward hooks keeping the latest output (or, with `inputs=True`, the first input) of each
    named module, so a loss can read features without changing the model's forward. Use as a
    context manager: the hooks must be gone before the model is copied (a deep copy would carry
    them into the copy, writing into this tap) or exported."""

    def __init__(self, model: nn.Module, names: Sequence[str], who: str, *, inputs: bool = False):
        self.names = list(names)
        self._features: dict[int, torch.Tensor] = {}
        self._handles = []
        for index, module in enumerate(find_modules(model, self.names, who)):
            self._handles.append(module.register_forward_hook(self._hook(index, inputs)))

    def _hook(self, index: int, inputs: bool):
        def keep(_module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self._features[index] = args[0] if inputs else output

        return keep

    def take(self) -> list[torch.Tensor]:
        """The features of the last forward, in `names` order, then forgotten."""
        missing = [self.names[i] for i in range(len(self.names)) if i not in self._features]
        if missing:
            raise RuntimeError(f"layers {missing} did not run in the last forward pass")
        features = [self._features[i] for i in range(len(self.names))]
        self._features.clear()
        return features

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._features.clear()

    def __enter__(self) -> "FeatureTap":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


# ---- which layers ----------------------------------------------------------------------------

def default_layers(model: nn.Module, loss: str) -> list[str]:
    """Built-in families: each stage's output (the last block of the stage) for fitnets and at,
    the classifier (the last nn.Linear) for nd. Another model gets [] (the recipe must name)."""
    if loss == "nd":
        linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
        return linears[-1:]
    stages = getattr(model, "stages", None)
    if isinstance(stages, nn.Sequential):
        return [f"stages.{index}" for index in range(len(stages))]
    return []


@dataclass
class LayerPairs:
    student: list[str]
    teacher: list[str]


def choose_layer_pairs(
    loss: str,
    student: nn.Module,
    teacher: nn.Module,
    student_layers: Sequence[str] | None,
    teacher_layers: Sequence[str] | None,
    example_input: torch.Tensor,
) -> LayerPairs:
    """The (student, teacher) layer pairs of `loss`, checked against both models: the recipe's
    names, else the defaults. Default stages are paired by output resolution (the deepest teacher
    stage of the same spatial size), so families with different stage counts still pair up.
    Raises UserError (before any training) for a missing name or unequal list lengths."""
    if isinstance(teacher, torch.jit.ScriptModule):
        raise UserError("feature KD needs the teacher as a Python module (forward hooks); a "
                        "TorchScript teacher supports logit KD only: set distill.feature_loss: null")
    if student_layers and teacher_layers is None:
        teacher_layers = list(student_layers)  # same family: the same names
    if student_layers is None and teacher_layers is not None:
        raise UserError("distill.teacher_layers is set but distill.feature_layers is not; "
                        "name the student's layers too (pairs are matched in order)")
    if student_layers is not None:
        pairs = LayerPairs(list(student_layers), list(teacher_layers))
    else:
        pairs = _default_pairs(loss, student, teacher, example_input)
    if len(pairs.student) != len(pairs.teacher) or not pairs.student:
        raise UserError(f"distill.feature_layers {pairs.student} and distill.teacher_layers "
                        f"{pairs.teacher} must be non-empty lists of the same length (paired in order)")
    if loss == "nd" and len(pairs.student) != 1:
        raise UserError(f"the nd loss takes one layer pair (the classifiers), got {len(pairs.student)}")
    find_modules(student, pairs.student, "student")
    find_modules(teacher, pairs.teacher, "teacher")
    return pairs


def _default_pairs(loss: str, student: nn.Module, teacher: nn.Module, example: torch.Tensor) -> LayerPairs:
    student_names, teacher_names = default_layers(student, loss), default_layers(teacher, loss)
    if not student_names or not teacher_names:
        who = "student" if not student_names else "teacher"
        raise UserError(f"the {who} is not a built-in family, so feature KD has no default layers; "
                        "name them with distill.feature_layers and distill.teacher_layers")
    if loss == "nd":
        return LayerPairs(student_names, teacher_names)
    student_sizes = _output_sizes(student, student_names, example)
    teacher_sizes = _output_sizes(teacher, teacher_names, example)
    pairs = LayerPairs([], [])
    for name, size in zip(student_names, student_sizes):
        same = [t for t, t_size in zip(teacher_names, teacher_sizes) if t_size == size]
        if same:
            pairs.student.append(name)
            pairs.teacher.append(same[-1])
    if not pairs.student:
        raise UserError("no student stage has the spatial size of a teacher stage; name the "
                        "layers with distill.feature_layers and distill.teacher_layers")
    return pairs


def _output_sizes(model: nn.Module, names: list[str], example: torch.Tensor) -> list[tuple[int, ...]]:
    was_training = model.training
    model.eval()
    try:
        with FeatureTap(model, names, "model") as tap, torch.no_grad():
            model(example[:1])
            return [tuple(f.shape[2:]) for f in tap.take()]
    finally:
        model.train(was_training)
