"""The step a config asks for: MSeg's, MGDA's or CCSA's, all called the same way by the loop."""

from __future__ import annotations

from functools import partial
from typing import Callable

from mseg_fast.config import Config
from mseg_fast.train.ccsa import ccsa_step
from mseg_fast.train.loop import standard_step
from mseg_fast.train.mgda import mgda_step


def build_step(config: Config) -> Callable:
    """`step(model, batch, weights, optimizer, scaler, precision) -> StepResult` with the config's settings."""
    if config.use_mgda:
        return partial(mgda_step, aux_weight=config.aux_weight)
    if config.use_ccsa:
        return partial(ccsa_step, alpha=config.ccsa_alpha, positives=config.ccsa_pairs, margin=config.ccsa_margin,
                       aux_weight=config.aux_weight)
    return partial(standard_step, aux_weight=config.aux_weight)
