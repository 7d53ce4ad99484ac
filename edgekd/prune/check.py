"""The recipe's `prune` section checked against the target, before any work starts."""

from __future__ import annotations

from edgekd.config import PruneConfig
from edgekd.errors import UserError
from edgekd.prune.channels import ALLOCATIONS, check_ratio
from edgekd.prune.importance import check_importance
from edgekd.prune.recovery import check_recovery
from edgekd.target import Target

FLOWS = ("search", "teacher")
LATENCY_ALLOCATION = "latency"


def check_prune_config(config: PruneConfig, target: Target) -> None:
    """UserError naming the first bad `prune.*` value; nothing when pruning is off."""
    if not config.enabled and not config.sparse_2_4:
        return
    if config.flow not in FLOWS:
        raise UserError(f"prune.flow must be one of {', '.join(FLOWS)}, got {config.flow!r}")
    allocations = (LATENCY_ALLOCATION, *ALLOCATIONS)
    if config.allocation not in allocations:
        raise UserError(f"prune.allocation must be one of {', '.join(allocations)}, got {config.allocation!r}")
    check_ratio(config.ratio)
    check_importance(config.importance)
    check_recovery(config.recovery)
    if config.target_speedup is not None and config.target_speedup <= 1.0:
        raise UserError(f"prune.target_speedup must be above 1 (2.0: twice as fast), got {config.target_speedup}")
    if config.max_steps < 1:
        raise UserError(f"prune.max_steps must be at least 1, got {config.max_steps}")
    if config.recovery_epochs < 0 or config.recovery_lr <= 0:
        raise UserError("prune.recovery_epochs must be >= 0 and prune.recovery_lr > 0")
    if not 0.0 <= config.min_speedup < 1.0:
        raise UserError(f"prune.min_speedup is a fraction in [0, 1) (0.05: 5% faster), got {config.min_speedup}")
    if config.max_accuracy_drop_pt < 0:
        raise UserError(f"prune.max_accuracy_drop_pt must be >= 0, got {config.max_accuracy_drop_pt}")
    if config.sparse_2_4 and not target.sparse_2_4:
        raise UserError(f"prune.sparse_2_4: target {target.name} does not run 2:4 sparse weights faster "
                        "(sparse_2_4 is false in its target file); TensorRT on Ampere or later does")
    if config.sparse_min_channels < 1:
        raise UserError(f"prune.sparse_min_channels must be positive, got {config.sparse_min_channels}")
