"""MGDA baseline (reference §5): combine per-dataset gradients with the min-norm convex weights.

MSeg runs one dataset per GPU and all-gathers every gradient; here a rank may hold every dataset
(or, with `dataset_gpu_mapping`, one, as in MSeg), so the per-dataset gradients come from one
forward and one backward per dataset through the shared graph, and each dataset's gradient is
averaged over the ranks that hold it (MSeg's per-dataset averaging over its ranks).
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist

from mseg_fast.constants import IGNORE_LABEL
from mseg_fast.data.batch import Batch
from mseg_fast.train.loop import NonFiniteGradient, StepResult, forward, supervised_loss

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


def _zero_loss(outputs) -> torch.Tensor:
    """A loss of 0 that reaches every head: its backward runs the same (SyncBatchNorm) collectives as a
    real loss, so a rank without a dataset stays in step with the ranks that have it."""
    heads = [outputs.logits] + ([outputs.aux] if outputs.aux is not None else [])
    return sum(h.float().sum() for h in heads) * 0.0


def _local_losses(outputs, batch: Batch, weights: torch.Tensor, aux_weight: float) -> dict[int, torch.Tensor]:
    """Each dataset's loss on this rank, main + aux_weight x aux (MSeg's MGDA, reference §5), for the
    datasets with at least one labelled pixel here."""
    losses = {}
    for dataset_id in batch.dataset_ids.unique().tolist():
        rows = batch.dataset_ids == dataset_id
        sub = Batch(batch.images[rows], batch.labels[rows], batch.dataset_ids[rows])
        loss, _, _, parts = supervised_loss(_rows(outputs, rows), sub, weights, aux_weight)
        # A dataset whose crops are all ignore pixels has no gradient to offer. (Its mean loss is NaN then, but
        # so is a non-finite loss, which must reach the finiteness check below: ask the labels.)
        if bool((sub.labels != IGNORE_LABEL).any()):
            losses[dataset_id] = loss
    return losses


def _rows(outputs, rows: torch.Tensor):
    return outputs._replace(logits=outputs.logits[rows], aux=outputs.aux[rows] if outputs.aux is not None else None,
                            embedding=None)


def gram_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """M[i, j] = <v_i, v_j> in float64 (on the CPU): products of ~10^8 float32 terms lose digits the solver
    needs when two gradients are nearly parallel. Converted a row at a time to bound the extra memory."""
    n = vectors.shape[0]
    gram = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        row = vectors[i].double()
        for j in range(i + 1):
            gram[i, j] = gram[j, i] = float(row @ vectors[j].double())
    return gram


def mgda_step(model, batch: Batch, weights: torch.Tensor, optimizer, scaler, precision: str,
              aux_weight: float = 0.4) -> StepResult:
    """One MGDA step; the signature of standard_step (`weights` gives the dataset count; MGDA chooses the weights).

    Every rank takes part in the same collectives whatever its batch holds: first one small all-reduce
    agrees on which datasets have labelled pixels anywhere and on their mean losses; then one gradient
    per such dataset (zero on a rank without it), summed over ranks and divided by the number of ranks
    that hold the dataset, as MSeg averages a dataset's gradient over its ranks under
    `dataset_gpu_mapping` (reference §5). The min-norm weights are then solved over all datasets.

    Raises:
        NonFiniteGradient: a dataset's combined gradient holds inf or NaN.
    """
    if precision == "fp16":
        raise ValueError("MGDA combines raw gradients; use precision fp32 or bf16 with use_mgda")
    num_datasets = len(weights)
    params = [p for p in model.parameters() if p.requires_grad]
    no_sync = model.no_sync() if hasattr(model, "no_sync") else contextlib.nullcontext()
    with no_sync:  # gradients are combined by hand below, not averaged by DDP
        outputs = forward(model, batch.images, precision)
        local = _local_losses(outputs, batch, weights, aux_weight)
        device = outputs.logits.device
        # Row 0: ranks holding each dataset; row 1: the sum of their losses.
        agreed = torch.zeros(2, num_datasets, dtype=torch.float64, device=device)
        for dataset_id, loss in local.items():
            agreed[0, dataset_id], agreed[1, dataset_id] = 1.0, float(loss.detach())
        if dist.is_initialized():
            dist.all_reduce(agreed)
        ids = [d for d in range(num_datasets) if agreed[0, d] > 0]
        optimizer.zero_grad(set_to_none=True)
        if not ids:  # no labelled pixel in the whole global batch: nothing to learn from
            return StepResult(torch.zeros((), device=device), torch.full((num_datasets,), float("nan"), device=device),
                              skipped=True)
        grads = []
        for k, dataset_id in enumerate(ids):
            loss = local[dataset_id] if dataset_id in local else _zero_loss(outputs)
            grads.append(torch.autograd.grad(loss, params, retain_graph=k < len(ids) - 1, allow_unused=True))
    stacked = torch.stack([torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                                      for g, p in zip(grad, params)]) for grad in grads])
    del grads
    if dist.is_initialized():
        dist.all_reduce(stacked)
    holders = agreed[0, ids].to(stacked)
    stacked /= holders[:, None]
    finite = torch.isfinite(stacked).all(dim=1).tolist()
    if not all(finite):
        raise NonFiniteGradient(ids[finite.index(False)])
    c = min_norm_weights(gram_matrix(stacked)).to(stacked)
    combined = c @ stacked
    offset = 0
    for p in params:
        p.grad = combined[offset:offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
    optimizer.step()
    # MGDA reads the device at every step anyway (the agreement, the min-norm solve on the host).
    values = {d: float(agreed[1, d] / agreed[0, d]) for d in ids}
    loss = sum(float(c[k]) * values[d] for k, d in enumerate(ids))
    parts = torch.tensor([values.get(d, float("nan")) for d in range(num_datasets)], device=device)
    return StepResult(torch.tensor(loss, device=device), parts, scales={d: float(c[k]) for k, d in enumerate(ids)})
