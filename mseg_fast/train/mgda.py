"""MGDA baseline (reference §5): combine per-dataset gradients with the min-norm convex weights.

MSeg runs one dataset per GPU and all-gathers every gradient; here a rank holds every dataset,
so the per-dataset gradients come from one forward and one backward per dataset through the
shared graph, and are averaged over ranks (MSeg's per-dataset averaging over its ranks).
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist

from mseg_fast.data.batch import Batch
from mseg_fast.train.loop import StepResult, forward
from mseg_fast.train.objective import per_dataset_loss

STOP = 1e-5  # L1 change of the weights that ends the solver
MAX_ROUNDS = 250  # MSeg declares this cap but never enforces it; we do


def project_to_simplex(y: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto {c >= 0, sum c = 1}."""
    ordered, _ = torch.sort(y, descending=True)
    cumulative = torch.cumsum(ordered, 0)
    tau = (cumulative[-1] - 1) / len(y)
    for i in range(len(y) - 1):
        candidate = (cumulative[i] - 1) / (i + 1)
        if candidate > ordered[i + 1]:
            tau = candidate
            break
    return torch.clamp(y - tau, min=0)


def _line_search(gram: torch.Tensor, c: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """Exact minimum of the norm on the segment [candidate, c] (MSeg's two-point rule)."""
    a, b, e = c @ gram @ c, c @ gram @ candidate, candidate @ gram @ candidate
    if b >= a:
        gamma = 0.999
    elif b >= e:
        gamma = 0.001
    else:
        gamma = float((e - b) / (a + e - 2 * b))
    return gamma * c + (1 - gamma) * candidate


def min_norm_weights(gram: torch.Tensor) -> torch.Tensor:
    """Convex weights c minimising |sum_d c_d v_d| given the Gram matrix M[i, j] = <v_i, v_j>.

    MSeg's solver: start uniform, move along the centred descent direction up to the simplex
    boundary, project, line-search, until the weights change by less than 1e-5 (L1).
    """
    gram = gram.double()
    n = gram.shape[0]
    c = torch.full((n,), 1.0 / n, dtype=torch.float64)
    for _ in range(MAX_ROUNDS):
        direction = -(gram @ c)
        p = direction - direction.mean()
        # The Gram matrix comes from float32 gradients (relative rounding ~1e-7): a centred direction
        # below that scale is no direction at all (equal gradients), not a reason to jump to a vertex.
        if float(p.abs().max()) <= 1e-6 * float(direction.abs().max()):
            return c
        to_zero = [float(-c[i] / p[i]) for i in range(n) if p[i] < 0 and float(-c[i] / p[i]) > 1e-7]
        to_one = [float((1 - c[i]) / p[i]) for i in range(n) if p[i] > 0 and float((1 - c[i]) / p[i]) > 1e-7]
        t = min(to_zero) if to_zero else 1.0
        if to_one:
            t = min(t, min(to_one))
        candidate = project_to_simplex(c + t * p)
        updated = _line_search(gram, c, candidate)
        if float((updated - c).abs().sum()) < STOP:
            return c  # MSeg returns the previous iterate
        c = updated
    return c


def mgda_step(model, batch: Batch, weights: torch.Tensor, optimizer, scaler, precision: str) -> StepResult:
    """One MGDA step; same signature as standard_step (`weights` is unused: MGDA chooses them)."""
    if precision == "fp16":
        raise ValueError("MGDA combines raw gradients; use precision fp32 or bf16 with use_mgda")
    params = [p for p in model.parameters() if p.requires_grad]
    no_sync = model.no_sync() if hasattr(model, "no_sync") else contextlib.nullcontext()
    with no_sync:  # gradients are combined by hand below, not averaged by DDP
        logits = forward(model, batch.images, precision, extras=False)
        losses = {}
        for dataset_id in batch.dataset_ids.unique().tolist():
            rows = batch.dataset_ids == dataset_id
            loss, present = per_dataset_loss(logits[rows], batch.labels[rows], batch.dataset_ids[rows], weights)
            if present:  # a dataset whose crops are all ignore pixels has no gradient to offer
                losses[dataset_id] = loss
        ids = sorted(losses)
        grads = []
        for k, dataset_id in enumerate(ids):
            grads.append(torch.autograd.grad(losses[dataset_id], params, retain_graph=k < len(ids) - 1,
                                             allow_unused=True))
    flat = []
    for grad in grads:
        vector = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grad, params)])
        if dist.is_initialized():
            dist.all_reduce(vector)
            vector /= dist.get_world_size()
        flat.append(vector)
    stacked = torch.stack(flat)
    c = min_norm_weights((stacked @ stacked.T).cpu()).to(stacked)
    combined = c @ stacked
    offset = 0
    for p in params:
        p.grad = combined[offset:offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
    optimizer.step()
    values = {d: float(losses[d].detach()) for d in ids}
    loss = sum(float(c[k]) * values[d] for k, d in enumerate(ids))
    return StepResult(loss, values, scales={d: float(c[k]) for k, d in enumerate(ids)})
