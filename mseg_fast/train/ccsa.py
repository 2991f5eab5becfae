"""CCSA baseline (reference §6): cross-entropy plus a contrastive alignment of embeddings across datasets.

Each step draws pairs of embedding locations from two different datasets ("domains") of the
rank's batch: positives share a class and are pulled together, negatives differ and are pushed
beyond a margin. The loss is alpha * alignment + (1 - alpha) * (cross-entropy + aux_weight * aux).

Kept from MSeg's sampler: a domain uniformly among those in the batch, then one of its crops
uniformly, then a location uniformly; N positive and 3N negative cross-domain pairs; margin 1,
alpha 0.25, N = 100. Changed, because they are MSeg's bugs (reference §9, item 17):
- ignore pixels are never sampled (MSeg lets two ignore pixels form a "positive" pair);
- labels are read at the input pixel each embedding cell maps to (align_corners geometry, the
  same as the network's final upsampling), not off a floor(H/8) grid that drifts from the features;
- candidates are drawn in chunks until enough pairs exist, at most MAX_ROUNDS chunks, instead of
  2 x 10^6 draws per step and an endless loop when no pair can exist;
- the cross-entropy is MSeg's per-dataset mean, as in every other step of this trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mseg_fast.constants import IGNORE_LABEL
from mseg_fast.data.batch import Batch
from mseg_fast.train.loop import StepResult, apply_gradients, forward, supervised_loss

CHUNK = 1 << 16  # candidate locations drawn per side and round
MAX_ROUNDS = 64  # a batch where fewer pairs exist gives what it has (counted in the log)
NEGATIVES_PER_POSITIVE = 3


@dataclass(frozen=True)
class Pairs:
    """Locations on the embedding grid: (crop, row, col) for side a and side b; `same` marks positives."""

    a: torch.Tensor
    b: torch.Tensor
    same: torch.Tensor


def grid_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The label under each cell of an h x w embedding grid of an N x H x W label batch.

    Cell i sits on input pixel i * (H - 1) / (h - 1) (align_corners): for MSeg's 8k+1 crops and
    PSPNet's stride-8 grid that is exactly pixel 8i.
    """
    indices = []
    for full, cells in zip(labels.shape[-2:], size):
        step = (full - 1) / (cells - 1) if cells > 1 else 0.0
        indices.append(torch.round(torch.arange(cells, dtype=torch.float64) * step).long().to(labels.device))
    return labels[:, indices[0]][:, :, indices[1]]


def draw_locations(table: torch.Tensor, counts: torch.Tensor, size: tuple[int, int], n: int) -> torch.Tensor:
    """n locations: a domain uniformly, one of its crops uniformly, a cell uniformly."""
    domain = torch.randint(len(counts), (n,))
    member = (torch.rand(n) * counts[domain]).long()
    return torch.stack([table[domain, member], torch.randint(size[0], (n,)), torch.randint(size[1], (n,))], 1)


def sample_pairs(grid: torch.Tensor, domains: torch.Tensor, positives: int) -> Pairs:
    """Cross-domain pairs of labelled cells: up to `positives` positives and 3x as many negatives.

    Args:
        grid: N x h x w labels on the embedding grid (CPU), 255 for ignore.
        domains: N dataset ids of the crops.
        positives: pairs of equal labels wanted.

    Draws from torch's global generator, so a checkpoint's RNG state makes a resumed run draw the same.

    Raises:
        ValueError: the batch holds a single domain (no cross-domain pair exists).
    """
    present = domains.unique()
    if len(present) < 2:
        raise ValueError(f"CCSA needs crops of at least two datasets in a batch; this one has only dataset "
                         f"{present.tolist()}")
    members = [torch.nonzero(domains == d).flatten() for d in present]
    counts = torch.tensor([len(m) for m in members])
    table = torch.stack([torch.nn.functional.pad(m, (0, int(counts.max()) - len(m))) for m in members])
    size = (grid.shape[1], grid.shape[2])
    negatives = NEGATIVES_PER_POSITIVE * positives
    found: dict[bool, list[torch.Tensor]] = {True: [], False: []}
    have = {True: 0, False: 0}
    for _ in range(MAX_ROUNDS):
        a, b = draw_locations(table, counts, size, CHUNK), draw_locations(table, counts, size, CHUNK)
        label_a, label_b = grid[a[:, 0], a[:, 1], a[:, 2]], grid[b[:, 0], b[:, 1], b[:, 2]]
        usable = (domains[a[:, 0]] != domains[b[:, 0]]) & (label_a != IGNORE_LABEL) & (label_b != IGNORE_LABEL)
        for same in (True, False):
            keep = torch.nonzero(usable & ((label_a == label_b) == same)).flatten()
            found[same].append(torch.cat([a[keep], b[keep]], 1))
            have[same] += len(keep)
        if have[True] >= positives and have[False] >= negatives:
            break
    chosen = [torch.cat(found[True])[:positives], torch.cat(found[False])[:negatives]]
    both = torch.cat(chosen)
    same = torch.cat([torch.ones(len(chosen[0]), dtype=torch.bool), torch.zeros(len(chosen[1]), dtype=torch.bool)])
    return Pairs(both[:, :3], both[:, 3:], same)


def pair_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance per row, floored at 1e-4 (sqrt of 1e-8) so its gradient stays finite."""
    return torch.sqrt(torch.clamp(((a - b) ** 2).sum(-1), min=1e-8))


def contrastive_loss(distance: torch.Tensor, same: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over pairs of d^2 (positives) and max(0, margin - d)^2 (negatives)."""
    return torch.where(same, distance ** 2, torch.clamp(margin - distance, min=0) ** 2).mean()


def alignment_loss(embedding: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor, positives: int,
                   margin: float) -> tuple[torch.Tensor, int, int]:
    """CCSA's semantic alignment term for one batch.

    Returns:
        The loss (0 with a graph when no pair exists), and the numbers of positive and negative pairs.
    """
    grid = grid_labels(labels, (embedding.shape[2], embedding.shape[3])).cpu()
    pairs = sample_pairs(grid, domains.cpu(), positives)
    if len(pairs.same) == 0:
        return embedding.sum() * 0.0, 0, 0
    a, b = (p.to(embedding.device) for p in (pairs.a, pairs.b))
    vectors_a = embedding[a[:, 0], :, a[:, 1], a[:, 2]].float()
    vectors_b = embedding[b[:, 0], :, b[:, 1], b[:, 2]].float()
    loss = contrastive_loss(pair_distance(vectors_a, vectors_b), pairs.same.to(embedding.device), margin)
    n_pos = int(pairs.same.sum())
    return loss, n_pos, len(pairs.same) - n_pos


def ccsa_step(model, batch: Batch, weights: torch.Tensor, optimizer, scaler, precision: str, alpha: float = 0.25,
              positives: int = 100, margin: float = 1.0, aux_weight: float = 0.4) -> StepResult:
    """One CCSA step; the signature of standard_step plus CCSA's settings."""
    outputs = forward(model, batch.images, precision)
    supervised, ce, aux, parts = supervised_loss(outputs, batch, weights, aux_weight)
    csa, n_pos, n_neg = alignment_loss(outputs.embedding, batch.labels, batch.dataset_ids, positives, margin)
    loss = alpha * csa + (1 - alpha) * supervised
    terms = {"csa": csa.detach(), "ce": ce.detach()}
    if aux is not None:
        terms["aux"] = aux.detach()
    terms.update(positives=float(n_pos), negatives=float(n_neg))
    skipped = apply_gradients(loss, optimizer, scaler)
    return StepResult(loss.detach(), parts, skipped, terms=terms)
