"""The feature-KD term of a distillation step: adapters, hooks on student and teacher, the teacher
forward, and the weighted loss (the losses themselves are in edgekd/distill/feature_losses.py).

The adapters (FitNets regressors, ND's connector) are trained with the student, their parameters
in the same optimizer, and live here, outside the student: the student's state dict, checkpoint
and exported artifact never hold them. Teacher features are too big to cache like logits, so the
teacher runs once per training step while a feature loss is on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from edgekd.data import Split
from edgekd.distill.feature_losses import (
    DEFAULT_WEIGHTS,
    FeatureTap,
    LayerPairs,
    attention_transfer_loss,
    class_centers,
    fitnets_loss,
    nd_loss,
)
from edgekd.errors import UserError
from edgekd.models.modes import eval_forward
from edgekd.training.evaluate import model_device

log = logging.getLogger(__name__)


class FeatureDistiller(nn.Module):
    """`weight * feature_loss(student features, teacher features)` for one training step.

    Build it on the fp32 student; `watch(model)` then hooks the model being trained (the fp32
    student, later its fake-quantized copy: the same layer names, see `resolve_name`), also
    keeping the batch it was called on; `loss(labels)` runs the teacher on that same batch (the
    same augmented pixels) and returns the weighted term."""

    def __init__(
        self,
        loss: str,
        pairs: LayerPairs,
        student: nn.Module,
        teacher: nn.Module,
        example_input: torch.Tensor,
        *,
        weight: float | None = None,
        train: Split | None = None,
        num_classes: int | None = None,
    ):
        super().__init__()
        self.kind = loss
        self.pairs = pairs
        self.weight = DEFAULT_WEIGHTS[loss] if weight is None else float(weight)
        self.teacher = [teacher]  # a list: the teacher is no submodule (not trained, not saved here)
        inputs = loss == "nd"  # nd reads the classifier's input, the others a layer's output
        self._teacher_tap = FeatureTap(teacher, pairs.teacher, "teacher", inputs=inputs)
        self._student_tap: FeatureTap | None = None
        self._student_input: torch.Tensor | None = None
        student_shapes, teacher_shapes = self._probe_shapes(student, teacher, example_input)
        self.adapters = nn.ModuleList(
            _adapter(loss, s, t) for s, t in zip(student_shapes, teacher_shapes)
        )
        self.register_buffer("centers", torch.empty(0))
        if loss == "nd":
            if train is None or num_classes is None:
                raise ValueError("the nd loss needs the training data for the teacher's class centres")
            self.centers = self._teacher_class_centers(train, num_classes)
        log.info("feature KD %s (weight %g) on %s <- teacher %s; the teacher runs a forward pass "
                 "in every training step (features are not cached)",
                 loss, self.weight, pairs.student, pairs.teacher)

    # ---- hooks ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def watch(self, model: nn.Module) -> Iterator[nn.Module]:
        """Hook `model` (the student being trained) for the duration of the block."""
        names = [resolve_name(model, name) for name in self.pairs.student]
        self._student_tap = FeatureTap(model, names, "student", inputs=self.kind == "nd")
        keep_input = model.register_forward_pre_hook(self._keep_input)
        try:
            yield model
        finally:
            keep_input.remove()
            self._student_tap.remove()
            self._student_tap = None
            self._student_input = None

    def _keep_input(self, _module: nn.Module, args: tuple) -> None:
        self._student_input = args[0]

    def close(self) -> None:
        self._teacher_tap.remove()

    # ---- the loss ------------------------------------------------------------------------------
    def loss(self, labels: torch.Tensor) -> torch.Tensor:
        """The weighted feature term for the batch the watched student has just run on."""
        if self._student_tap is None or self._student_input is None:
            raise RuntimeError("FeatureDistiller.loss called outside watch(model), or before the model ran")
        student_features = self._student_tap.take()
        teacher = self.teacher[0]
        teacher.eval()
        x = self._student_input
        if model_device(teacher) != x.device:
            teacher.to(x.device)  # the teacher follows the student to the training device
        with torch.no_grad():
            teacher(x)
        teacher_features = self._teacher_tap.take()
        if self.kind == "nd":
            embedding = self.adapters[0](student_features[0].flatten(1))
            term = nd_loss(embedding, teacher_features[0].flatten(1), self.centers, labels)
        elif self.kind == "fitnets":
            term = sum(fitnets_loss(s, t, a) for s, t, a in
                       zip(student_features, teacher_features, self.adapters))
        else:
            term = sum(attention_transfer_loss(s, t) for s, t in zip(student_features, teacher_features))
        return self.weight * term

    # ---- setup ---------------------------------------------------------------------------------
    def _probe_shapes(self, student: nn.Module, teacher: nn.Module, example: torch.Tensor):
        names = self.pairs.student
        with FeatureTap(student, names, "student", inputs=self.kind == "nd") as tap:
            eval_forward(student, example[:2])
            student_shapes = [tuple(f.shape[1:]) for f in tap.take()]
        eval_forward(teacher, example[:2])
        teacher_shapes = [tuple(f.shape[1:]) for f in self._teacher_tap.take()]
        for s_name, t_name, s, t in zip(names, self.pairs.teacher, student_shapes, teacher_shapes):
            if self.kind != "nd" and (len(s) != 3 or len(t) != 3):
                raise UserError(f"{self.kind} needs image-shaped features [C, H, W]; student "
                                  f"{s_name!r} gives {list(s)}, teacher {t_name!r} gives {list(t)}")
        return student_shapes, teacher_shapes

    def _teacher_class_centers(self, train: Split, num_classes: int) -> torch.Tensor:
        """ND's class centres: the mean teacher embedding per class over the training set."""
        embeddings = []
        for images, _, _ in train.batches(train.inference_batch(256)):
            eval_forward(self.teacher[0], images)
            embeddings.append(self._teacher_tap.take()[0].flatten(1))
        return class_centers(torch.cat(embeddings), train.y, num_classes)


def resolve_name(model: nn.Module, name: str) -> str:
    """`name` in `model`, or the one module whose name ends with '.' + name: NNCF 3.4 keeps the
    float model's module names (checked in tests/test_kd_features.py), but a quantizer that wraps
    the model (ModelOpt, coremltools) may prefix them."""
    names = [n for n, _ in model.named_modules()]
    if name in names:
        return name
    suffixed = [n for n in names if n.endswith("." + name)]
    return suffixed[0] if len(suffixed) == 1 else name  # not found: FeatureTap says so, with hints


def _adapter(loss: str, student_shape: Sequence[int], teacher_shape: Sequence[int]) -> nn.Module:
    if loss == "fitnets":
        return nn.Conv2d(student_shape[0], teacher_shape[0], kernel_size=1)
    if loss == "nd" and student_shape[0] != teacher_shape[0]:
        # The authors' EmbTrans connector, with their init.
        connector = nn.Sequential(nn.BatchNorm1d(student_shape[0]), nn.Dropout(0.5),
                                  nn.Linear(student_shape[0], teacher_shape[0]))
        nn.init.normal_(connector[2].weight, 0.0, 0.01)
        nn.init.normal_(connector[2].bias, 0.0, 0.01)
        return connector
    return nn.Identity()
