"""One MGDA step on gloo ranks (run by torchrun from test_ranks.py), checked against one process.

    torchrun --nproc_per_node 3 tests/mgda_ranks.py LAYOUT OUT.json

LAYOUT 'mapping': MSeg's dataset_gpu_mapping, rank r holds the two crops of dataset r.
LAYOUT 'ignore': every rank holds one crop of each dataset; rank 1's crop of dataset 2 is all ignore.
Rank 0 also computes the per-dataset gradients of the same global batch in a single process (plain
BatchNorm over the whole batch, which is what SyncBatchNorm computes over the ranks), averages each
dataset's over the ranks that hold it, and solves; both results go to OUT.json.
"""

from __future__ import annotations

import copy
import json
import sys

import torch
from torch import nn

from mseg_fast.data.batch import Batch
from mseg_fast.models.outputs import SegOutputs
from mseg_fast.train.distributed import init_distributed, release_group, sync_batchnorm
from mseg_fast.train.mgda import gram_matrix, mgda_step, min_norm_weights
from mseg_fast.train.objective import per_dataset_loss

CLASSES, DATASETS, SIZE = 4, 3, 17


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, CLASSES, 1))

    def forward(self, images, extras=False):
        logits = self.body(images)
        return SegOutputs(logits, None, None) if extras else logits


def rank_batches(layout: str, world: int) -> list[Batch]:
    """Each rank's batch, the same on every rank (seeded)."""
    generator = torch.Generator().manual_seed(1)
    batches = []
    for rank in range(world):
        ids = torch.tensor([rank, rank]) if layout == "mapping" else torch.arange(DATASETS)
        images = torch.randn(len(ids), 3, SIZE, SIZE, generator=generator) + ids[:, None, None, None]
        labels = torch.randint(0, CLASSES, (len(ids), SIZE, SIZE), generator=generator)
        if layout == "ignore" and rank == 1:
            labels[2] = 255
        batches.append(Batch(images, labels, ids))
    return batches


def single_process(model: nn.Module, batches: list[Batch]) -> dict[int, float]:
    """Per-dataset gradients of the whole batch in one process, averaged over holding ranks, and solved."""
    images = torch.cat([b.images for b in batches])
    logits = model(images)
    params = list(model.parameters())
    sums, holders = {}, {}
    offset = 0
    for batch in batches:
        rows = slice(offset, offset + len(batch))
        offset += len(batch)
        for dataset_id in batch.dataset_ids.unique().tolist():
            mask = batch.dataset_ids == dataset_id
            loss, _ = per_dataset_loss(logits[rows][mask], batch.labels[mask], batch.dataset_ids[mask],
                                           torch.ones(DATASETS))
            if (batch.labels[mask] == 255).all():
                continue
            grad = torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)])
            sums[dataset_id] = sums.get(dataset_id, 0) + grad
            holders[dataset_id] = holders.get(dataset_id, 0) + 1
    ids = sorted(sums)
    stacked = torch.stack([sums[d] / holders[d] for d in ids])
    weights = min_norm_weights(gram_matrix(stacked))
    return {d: float(weights[k]) for k, d in enumerate(ids)}


def main(layout: str, out: str) -> None:
    info = init_distributed()
    torch.manual_seed(0)
    model = Tiny().train()
    reference = copy.deepcopy(model)
    network = nn.parallel.DistributedDataParallel(sync_batchnorm(model, info))
    batches = rank_batches(layout, info.world_size)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    result = mgda_step(network, batches[info.rank], torch.ones(DATASETS), optimizer, scaler, "fp32")
    del network, model, optimizer  # DDP's reducer goes while the group is alive (release_group)
    if info.is_main:
        with open(out, "w") as handle:
            json.dump({"ranks": result.scales, "single": single_process(reference, batches),
                       "losses": result.part_values()}, handle)
    release_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
