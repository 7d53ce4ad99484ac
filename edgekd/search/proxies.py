"""Zero-cost proxies: score a candidate student without training it. Higher is better.

One `ProxyScorer` scores hundreds of candidates, so everything that depends only on the teacher
and the batch is computed once, in its constructor. `score` leaves the student as it found it:
proxies that re-initialise it or run it in train mode put its tensors and modes back afterwards
(`restored`), and synflow, which rebuilds it without BatchNorm in float64, works on a deep copy.

What each proxy follows:

- "diswot": Dong, Li, Wei, "DisWOT: Student Architecture Search for Distillation WithOut
  Training", CVPR 2023, as in the authors' code, github.com/lilujunai/DisWOT-CVPR2023 (stored in
  the index as lliai/DisWOT-CVPR2023; the paper's own text was not consulted beyond its abstract):
  * both networks get the code's `network_weight_gaussian_init` (conv and linear weights N(0, 1),
    biases 0, norm layers weight 1 / bias 0) and run in train mode, so BatchNorm uses the batch's
    statistics (searcher/rand_search_nb201.py initialises both so and never calls eval());
  * relation similarity: README.md "Core Code" `batch_similarity` = distiller_zoo's SP loss on the
    activation before global pooling: G = f f^T over the batch (B x B), rows L2-normalised
    (F.normalize), distance = sum((G_t - G_s)^2) / B^2;
  * semantic similarity: README.md `semantic_similarity_metric`: the gradient of the
    cross-entropy loss with respect to the classifier's weight ("grad-cam of fc layer", a K x C
    matrix for K classes), compared with distiller_zoo/ICKD.py's `batch_loss`
    (searcher/evo_search_nb201.py);
  * score = -(semantic distance + relation distance), unweighted, as in the code's NAS-Bench-201
    rank-consistency function `compute_diswot_procedure` (`result = score_sp + score_ickd`; the
    code index holds it without its file path).
  One departure, because the code cannot run here otherwise: ICKD builds a per-class C x C matrix
  from the K x C gradient and subtracts teacher from student, which needs both to end with the same
  channel count C (true in the official NAS-Bench setups, where teacher and students all end at 64
  channels; the official ImageNet search, where widths differ, drops the semantic term and keeps
  only the relation term: searcher/evo_search_zen.py). Our candidates differ in width, so the
  semantic matrix here is the class x class one, G = A A^T of the K x C gradient A, with the same
  row normalisation and the same mean squared distance. It is zero for identical networks, as the
  original is.
  The official code re-initialises the teacher too (the metric compares architectures, not
  weights); `teacher_weights="trained"` keeps the teacher's trained weights (in eval mode) instead,
  an option the official code does not have.
- "naswot": Mellor et al., "Neural Architecture Search without Training", ICML 2021, as in
  BayesWatch/nas-without-training (score_networks.py, scores.py `hooklogdet`): the binary code of
  every ReLU's input over the batch, K = sum over layers of c c^T + (1 - c)(1 - c)^T, score
  log|det K| (slogdet); the network in train mode, with its own (not re-drawn) initial weights.
- "synflow": Tanaka et al. 2020, as in Abdelfattah et al., "Zero-Cost Proxies for Lightweight
  NAS", ICLR 2021 (SamsungLabs/zero-cost-nas foresight/pruners/measures/synflow.py, registered
  with bn=False): BatchNorm layers become identities, all parameters |theta|, the net in float64,
  one all-ones input image, R = sum(output), score = sum over Conv2d/Linear weights of
  |theta * dR/dtheta|.
- "params", "macs": edgekd.models.count_params / count_macs (batch 1, the batch's image shape).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import logging
import time
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from edgekd.config import SCORES
from edgekd.errors import UserError
from edgekd.models import count_macs, count_params

log = logging.getLogger(__name__)

PROXIES: tuple[str, ...] = SCORES  # the names the recipe allows (edgekd/config.py)
TEACHER_FREE: tuple[str, ...] = tuple(p for p in PROXIES if p != "diswot")
TEACHER_WEIGHTS: tuple[str, ...] = ("random", "trained")

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)
_RELUS = (nn.ReLU, nn.ReLU6)


class ProxyScorer:
    """`ProxyScorer(name, teacher, x, y).score(student)`: a float, higher is better.

    x (B, C, H, W) and y (B,) are the images and labels every candidate is scored on; the
    teacher is used by "diswot" only (pass None for the others). `seed` fixes diswot's random
    initialisation, so a score depends on the architecture alone."""

    def __init__(
        self,
        name: str,
        teacher: nn.Module | None,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        seed: int = 0,
        teacher_weights: str = "random",
    ):
        self.name = _check_name(name)
        if x.ndim != 4 or y.ndim != 1 or len(x) != len(y) or len(x) < 2:
            raise ValueError(f"need x (B, C, H, W) and y (B,) with B >= 2; got {tuple(x.shape)} and {tuple(y.shape)}")
        if teacher_weights not in TEACHER_WEIGHTS:
            raise UserError(f"teacher_weights {teacher_weights!r}: choose from {', '.join(TEACHER_WEIGHTS)}")
        self.x, self.y, self.seed = x.detach(), y.detach().long(), seed
        self.teacher_weights = teacher_weights
        self._teacher_matrices: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.name == "diswot":
            start = time.perf_counter()
            model = _checked_teacher(teacher)
            if teacher_weights == "random":
                gaussian_init_(model, seed)
                model.train()
            else:
                model.eval()
            self._teacher_matrices = diswot_matrices(model, self.x, self.y)
            log.debug("diswot: teacher matrices (%s weights) from %d images in %.1f ms",
                      teacher_weights, len(x), (time.perf_counter() - start) * 1e3)

    def score(self, student: nn.Module) -> float:
        start = time.perf_counter()
        if self.name == "diswot":
            value = self._diswot(student)
        elif self.name == "naswot":
            value = naswot_score(student, self.x)
        elif self.name == "synflow":
            value = synflow_score(student, tuple(self.x.shape[1:]))
        elif self.name == "params":
            value = float(count_params(student))
        else:
            macs = count_macs(student, tuple(self.x.shape[1:]))
            if macs is None:
                raise UserError("the macs proxy cannot count a TorchScript student; use params")
            value = float(macs)
        log.debug("%s: %.6g in %.1f ms", self.name, value, (time.perf_counter() - start) * 1e3)
        return value

    def _diswot(self, student: nn.Module) -> float:
        assert self._teacher_matrices is not None
        with restored(student):
            gaussian_init_(student, self.seed)
            student.train()
            semantic_s, relation_s = diswot_matrices(student, self.x, self.y)
        semantic_t, relation_t = self._teacher_matrices
        # 0.0 - ...: identical networks score 0.0, not -0.0
        return 0.0 - (matrix_distance(semantic_t, semantic_s) + matrix_distance(relation_t, relation_s))


def _check_name(name: str) -> str:
    if name in PROXIES:
        return name
    close = difflib.get_close_matches(str(name).lower(), PROXIES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"unknown proxy {name!r}{hint}; known: {', '.join(PROXIES)}")


def _checked_teacher(teacher: nn.Module | None) -> nn.Module:
    """A private copy of the teacher: diswot re-initialises it or builds a graph through it, and
    the caller's teacher must stay as it was."""
    alternatives = ", ".join(TEACHER_FREE)
    if teacher is None:
        raise UserError(f"the diswot proxy compares students with a teacher, and none was given; "
                        f"proxies that need no teacher: {alternatives}")
    if isinstance(teacher, torch.jit.ScriptModule):
        raise UserError("the diswot proxy needs the teacher's feature maps and classifier, which a "
                        "TorchScript teacher does not expose to hooks; pass its state dict with "
                        f"--teacher-arch, or use a proxy that needs no teacher: {alternatives}")
    return copy.deepcopy(teacher)


@contextlib.contextmanager
def restored(model: nn.Module) -> Iterator[nn.Module]:
    """Lets a proxy re-initialise the model, switch its mode and run train-mode BatchNorm (which
    updates running statistics), then puts every parameter, buffer and mode back in place: the
    same tensors, so optimizers holding them see no change. A deep copy does the same at ~10x the
    cost (50 ms for mobilenet_s), which matters at hundreds of candidates."""
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                tensor.copy_(state[name])
        for module, training in modes:
            module.training = training


# ---- DisWOT ----------------------------------------------------------------------------------

def gaussian_init_(model: nn.Module, seed: int) -> nn.Module:
    """The DisWOT code's `network_weight_gaussian_init`, from a seeded generator: two networks
    with the same architecture get the same weights, so a model scored against itself is identical
    to it (distance 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(module.weight, generator=generator)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, _NORMS) and module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
    return model


def diswot_matrices(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(semantic K x K, relation B x B) similarity matrices of `model` on (x, y), in its current
    mode and weights."""
    logits, features, classifier = forward_with_taps(model, x)
    loss = F.cross_entropy(logits, y)
    # Only the classifier weight's gradient is asked for, so autograd runs just the last layer's
    # backward, not the whole network's.
    (weight_grad,) = torch.autograd.grad(loss, [classifier.weight])
    return semantic_matrix(weight_grad.detach()), relation_matrix(features.detach())


def semantic_matrix(class_grads: torch.Tensor) -> torch.Tensor:
    """K x C classifier gradient -> K x K class-similarity matrix, rows L2-normalised. Its size
    depends on the classes only, so students of any width compare with the teacher."""
    return F.normalize(class_grads @ class_grads.t(), dim=1)


def relation_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, ...) features -> B x B sample-similarity matrix, rows L2-normalised (SP)."""
    flat = features.flatten(1)
    return F.normalize(flat @ flat.t(), dim=1)


def matrix_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared difference: the SP/ICKD losses' sum of squares over the matrix's size."""
    return float(((a - b) ** 2).mean())


def forward_with_taps(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, nn.Linear]:
    """model(x) with its last 4-D feature map and its classifier, found by forward hooks.

    The feature map is the input of the last global-pooling layer to run: a leaf module that turns
    a 4-D map larger than 1x1 into 1x1 (or into a (B, C) vector), as AdaptiveAvgPool2d(1) does.
    The last one, because squeeze-excitation blocks pool too, earlier. Without such a module
    (pooling done in forward() by a function), it is the output of the last module to return a
    4-D tensor. The classifier is the last nn.Linear to run, which the families' `pool -> fc`
    ending makes the one producing the logits."""
    taps: dict[str, object] = {}

    def on_forward(module: nn.Module, inputs: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4:
            taps["last_4d"] = output
        if isinstance(module, nn.Linear):
            taps["classifier"] = module
        if _is_global_pool(module, inputs, output):
            taps["pooled"] = inputs[0]

    handles = [m.register_forward_hook(on_forward) for m in model.modules() if m is not model]
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    features = taps.get("pooled", taps.get("last_4d"))
    if not isinstance(features, torch.Tensor) or "classifier" not in taps:
        raise UserError(f"{type(model).__name__}: the diswot proxy needs a 4-D feature map and an "
                        "nn.Linear classifier that forward hooks can see")
    return logits, features, taps["classifier"]  # type: ignore[return-value]


def _is_global_pool(module: nn.Module, inputs: tuple, output: object) -> bool:
    if next(module.children(), None) is not None or not inputs or not isinstance(output, torch.Tensor):
        return False
    source = inputs[0]
    if not isinstance(source, torch.Tensor) or source.ndim != 4 or source.shape[2] * source.shape[3] == 1:
        return False
    if output.ndim == 4:
        return output.shape[:2] == source.shape[:2] and output.shape[2] * output.shape[3] == 1
    return output.ndim == 2 and output.shape == source.shape[:2]


# ---- NASWOT ----------------------------------------------------------------------------------

def naswot_score(student: nn.Module, x: torch.Tensor) -> float:
    """log|det K_H| of the ReLU codes over the batch (Mellor et al. 2021)."""
    kernel = torch.zeros(len(x), len(x), dtype=torch.float64)

    def on_relu(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        # relu(v) > 0 exactly when v > 0, so the output gives the input's code, and stays right
        # for inplace ReLUs, whose input tensor the hook sees already overwritten.
        code = (output.detach().flatten(1) > 0).float()
        # c c^T + (1-c)(1-c)^T = 2 c c^T - n_i - n_j + N (n: each row's active count), one
        # matmul instead of two; float32 counts are exact below 2^24 units per layer.
        active = code @ code.t()
        counts = active.diagonal()
        kernel.add_((2 * active - counts[:, None] - counts[None, :] + code.shape[1]).double())

    handles = [m.register_forward_hook(on_relu) for m in student.modules() if isinstance(m, _RELUS)]
    if not handles:
        raise UserError(f"{type(student).__name__} has no nn.ReLU/nn.ReLU6 module, which the naswot proxy reads")
    try:
        with restored(student), torch.no_grad():
            student.train()  # as the official code runs it: BatchNorm on the batch's statistics
            student(x)
    finally:
        for handle in handles:
            handle.remove()
    _sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet)


# ---- SynFlow ---------------------------------------------------------------------------------

def synflow_score(student: nn.Module, input_shape: tuple[int, ...]) -> float:
    """sum |theta * dR/dtheta| over Conv2d/Linear weights, R = sum of the linearised net's output
    on an all-ones image (Tanaka et al. 2020, zero-cost-nas's float64 variant without BN)."""
    model = copy.deepcopy(student)
    _remove_batchnorm_(model)
    # eval(): with BN gone only dropout would differ, and it must not make the score random.
    model = model.double().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.abs_()
    output = model(torch.ones(1, *input_shape, dtype=torch.float64))
    output.sum().backward()
    total = 0.0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module.weight.grad is not None:
                total += float((module.weight * module.weight.grad).abs().sum())
    return total


def _remove_batchnorm_(model: nn.Module) -> None:
    """zero-cost-nas computes synflow with bn=False: BatchNorm's forward becomes the identity."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, nn.Identity())

