"""Recompute BatchNorm's running statistics over some training batches before validation.

Why: MSeg's BatchNorm momentum is 0.01, so the running statistics trail the weights by a few hundred
iterations; a short run (the demo, a short fine-tuning) validates with statistics of much earlier
weights and scores far below what the weights can do (14-40 mIoU on the demo's sets after 120
iterations). Averaging the batch statistics of the current weights over N training batches fixes that.
Off in MSeg's recipes (`bn_recalibrate: 0`), whose runs are long enough for the running averages.
"""

from __future__ import annotations

from itertools import islice
from typing import Iterable

import torch
from torch import nn

from mseg_fast.data.batch import Batch


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Batch], count: int, device: torch.device) -> int:
    """Set every BatchNorm's running mean and variance to their average over `count` batches' statistics
    (a cumulative average: momentum None), the weights untouched.

    Returns:
        The number of batches used.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    was_training = model.training
    model.train()
    used = 0
    try:
        for batch in islice(batches, count):
            model(batch.images.to(device, non_blocking=True).float())  # fp32 statistics, float16 hand-over included
            used += 1
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.train(was_training)
    return used
