"""MSeg's objective and schedule: per-dataset mean cross-entropy, averaged over datasets; poly LR."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mseg_fast.constants import IGNORE_LABEL


def per_dataset_loss(logits: torch.Tensor, labels: torch.Tensor, dataset_ids: torch.Tensor,
                     weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy (ignore 255) averaged over each dataset's labelled pixels, then a weighted
    mean over the datasets in the batch (reference §3.5: each dataset counts equally, whatever
    its pixel count). A dataset whose crops are all ignore pixels contributes nothing (MSeg
    would produce NaN).

    Written without a host synchronisation (no `.unique().tolist()`, no `count == 0` test in Python):
    per-crop sums go to their dataset with index_add, so a CUDA step queues its kernels without waiting.

    Returns:
        The loss, and each dataset's mean loss (detached; NaN for a dataset with no labelled pixel here),
        one entry per weight.
    """
    pixel = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_LABEL, reduction="none")
    valid = (labels != IGNORE_LABEL).flatten(1).sum(1).to(pixel.dtype)
    zeros = torch.zeros(weights.shape[0], dtype=pixel.dtype, device=pixel.device)
    sums = zeros.index_add(0, dataset_ids, pixel.flatten(1).sum(1))
    counts = zeros.index_add(0, dataset_ids, valid)
    present = counts > 0
    means = sums / counts.clamp_min(1.0)  # 0 where absent: its sum is 0 too (ignored pixels add nothing)
    used = weights.to(pixel.dtype) * present
    total = used.sum()
    # Nothing labelled anywhere: 0 / 1 = 0, still joined to the graph (a zero gradient, as before).
    loss = (used * means).sum() / torch.where(total > 0, total, torch.ones_like(total))
    return loss, torch.where(present, means, torch.full_like(means, float("nan"))).detach()


def build_optimizer(groups: list[tuple[list[torch.nn.Parameter], float]], base_lr: float, momentum: float,
                    weight_decay: float, kind: str = "sgd") -> torch.optim.Optimizer:
    """MSeg's optimiser: SGD, weight decay on every parameter, no Nesterov (reference §3.10); or AdamW
    (decoupled weight decay, PyTorch's betas) for short runs, where its per-parameter step size moves the
    rare classes' classifier rows, whose gradients are small, as fast as the frequent ones'.

    Args:
        groups: (parameters, learning-rate multiplier) pairs, as `model.param_groups()` gives them:
            one group for HRNet; PSPNet's backbone at 1x and its heads at 10x. The loop scales
            each group's poly learning rate by its `lr_mult`.
    """
    param_groups = [{"params": params, "lr": base_lr * mult, "lr_mult": mult} for params, mult in groups]
    if kind == "adamw":
        return torch.optim.AdamW(param_groups, lr=base_lr, weight_decay=weight_decay)
    if kind != "sgd":
        raise ValueError(f"unknown optimizer '{kind}'; choose sgd or adamw")
    return torch.optim.SGD(param_groups, lr=base_lr, momentum=momentum, weight_decay=weight_decay)


def poly_lr(base_lr: float, iteration: int, max_iters: int, power: float) -> float:
    """MSeg's poly schedule: the LR for the step after `iteration` completed steps."""
    return base_lr * (1 - min(iteration, max_iters) / max_iters) ** power


def derive_max_iters(num_examples: int, batch_size: int, num_datasets: int) -> int:
    """MSeg's length: every dataset contributes ~num_examples crops (reference §3.6)."""
    per_dataset = batch_size / num_datasets
    return max(1, int(num_examples // per_dataset))
