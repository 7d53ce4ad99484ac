"""Knowledge-distillation losses on logits, and the recipe's choice among them.

- `hinton`: Hinton et al. 2015, "Distilling the Knowledge in a Neural Network".
- `dist`: Huang et al., NeurIPS 2022, "Knowledge Distillation from A Stronger Teacher" (DIST),
  as in the authors' code (hunto/DIST_KD, classification/lib/models/losses/dist_kd.py).
- `dkd`: Zhao et al., CVPR 2022, "Decoupled Knowledge Distillation" (DKD), as in the authors' code
  (megvii-research/mdistiller, mdistiller/distillers/DKD.py).

`make_kd_loss(name, settings)` returns the training objective of the named paper, the KD term
combined with the label cross-entropy the way that paper does, as a callable of
(student_logits, teacher_logits, labels). Feature losses (FitNets, attention transfer, ND) are in
edgekd/distill/feature_losses.py and add to this objective.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F

from edgekd.distill.feature_losses import check_feature_loss
from edgekd.errors import UserError

KDLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def hinton_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton et al. 2015: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels).
    The T^2 keeps the soft term's gradient scale independent of the temperature."""
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (temperature**2)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1.0 - alpha) * hard


# ---- DIST ------------------------------------------------------------------------------------

def pearson_correlation(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of each row of `a` with the same row of `b` (shape [rows]): the cosine
    similarity of the mean-centred rows, with the reference code's eps in the denominator."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
) -> torch.Tensor:
    """DIST (Huang et al. 2022), on the probabilities y = softmax(logits / tau):

    inter = tau^2 * (1 - mean over samples of pearson(y_s[i, :], y_t[i, :]))   # across classes
    intra = tau^2 * (1 - mean over classes of pearson(y_s[:, c], y_t[:, c]))   # across the batch
    loss  = beta * inter + gamma * intra

    The correlations are of the softmax outputs, not of the logits: the loss is unchanged by adding
    a constant to a sample's logits, but not by scaling them. The intra-class term needs a batch of
    at least two samples (a class column of one sample has no variance)."""
    y_s = F.softmax(student_logits / temperature, dim=1)
    y_t = F.softmax(teacher_logits / temperature, dim=1)
    inter = (1.0 - pearson_correlation(y_s, y_t).mean()) * temperature**2
    intra = (1.0 - pearson_correlation(y_s.t(), y_t.t()).mean()) * temperature**2
    return beta * inter + gamma * intra


# ---- DKD -------------------------------------------------------------------------------------

def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = 4.0,
    alpha: float = 1.0,
    beta: float = 8.0,
) -> torch.Tensor:
    """DKD (Zhao et al. 2022): alpha * TCKD + beta * NCKD, both times T^2 and averaged over the batch.

    TCKD: KL between teacher and student binary distributions [p_gt, 1 - p_gt] (p = softmax(z / T)).
    NCKD: KL between teacher and student distributions over the non-target classes only: a softmax
          of z / T with 1000 subtracted from the ground-truth logit, as in the reference code."""
    gt_mask = torch.zeros_like(student_logits, dtype=torch.bool)
    gt_mask.scatter_(1, labels.reshape(-1, 1), True)
    batch = labels.shape[0]

    pred_student = F.softmax(student_logits / temperature, dim=1)
    pred_teacher = F.softmax(teacher_logits / temperature, dim=1)
    binary_student = _target_and_rest(pred_student, gt_mask)
    binary_teacher = _target_and_rest(pred_teacher, gt_mask)
    tckd = F.kl_div(torch.log(binary_student), binary_teacher, reduction="sum") * temperature**2 / batch

    log_student_rest = F.log_softmax(student_logits / temperature - 1000.0 * gt_mask, dim=1)
    teacher_rest = F.softmax(teacher_logits / temperature - 1000.0 * gt_mask, dim=1)
    nckd = F.kl_div(log_student_rest, teacher_rest, reduction="sum") * temperature**2 / batch
    return alpha * tckd + beta * nckd


def _target_and_rest(probs: torch.Tensor, gt_mask: torch.Tensor) -> torch.Tensor:
    """[batch, classes] probabilities -> [batch, 2]: (p of the ground truth, p of all others)."""
    return torch.stack([(probs * gt_mask).sum(dim=1), (probs * ~gt_mask).sum(dim=1)], dim=1)


# ---- the recipe's choice ---------------------------------------------------------------------

def _hinton_objective(settings: Any) -> KDLoss:
    """alpha * T^2 * KL + (1 - alpha) * CE (distill.temperature, distill.alpha)."""
    temperature, alpha = settings.temperature, settings.alpha

    def loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return hinton_kd_loss(student, teacher, labels, temperature=temperature, alpha=alpha)

    return loss


def _dist_objective(settings: Any) -> KDLoss:
    """CE + DIST, both weighted 1 as in the reference training code (distill.temperature as tau,
    distill.dist_beta, distill.dist_gamma; distill.alpha is not used)."""
    temperature, beta, gamma = settings.temperature, settings.dist_beta, settings.dist_gamma

    def loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(student, labels) + dist_loss(
            student, teacher, temperature=temperature, beta=beta, gamma=gamma)

    return loss


def _dkd_objective(settings: Any) -> KDLoss:
    """CE + DKD, CE weighted 1 as in mdistiller's DKD config (distill.temperature as T,
    distill.dkd_alpha, distill.dkd_beta; distill.alpha is not used). mdistiller also ramps the DKD
    term in linearly over its first 20 epochs; that warm-up is not applied here."""
    temperature, alpha, beta = settings.temperature, settings.dkd_alpha, settings.dkd_beta

    def loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(student, labels) + dkd_loss(
            student, teacher, labels, temperature=temperature, alpha=alpha, beta=beta)

    return loss


# name -> builder of that paper's objective from the recipe's `distill` section
KD_LOSSES: dict[str, Callable[[Any], KDLoss]] = {
    "hinton": _hinton_objective,
    "dist": _dist_objective,
    "dkd": _dkd_objective,
}


def make_kd_loss(name: str, settings: Any) -> KDLoss:
    """The training objective `name` (a key of KD_LOSSES) with its weights from `settings`
    (a DistillConfig), as a callable of (student_logits, teacher_logits, labels).

    The settings' feature loss name (distill.feature_loss, added to this objective by the distill
    stage) is checked here too, so one early call catches a typo in either name."""
    builder = KD_LOSSES.get(name)
    if builder is None:
        known = sorted(KD_LOSSES)
        close = difflib.get_close_matches(str(name).lower(), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown KD loss {name!r}{hint}; known: {', '.join(known)}")
    check_feature_loss(getattr(settings, "feature_loss", None))
    return builder(settings)
