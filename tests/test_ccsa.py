"""CCSA (reference §6): the contrastive loss, the pair sampler and its fixes of MSeg's bugs, the step,
and a short run of train.py with PSPNet on the demo shards (two ranks: test_ranks.py)."""

from __future__ import annotations

import re

import pytest
import torch

from helpers import REPO
from mseg_fast.config import load_config
from mseg_fast.data.batch import Batch
from mseg_fast.errors import UserError
from mseg_fast.models.factory import build_model
from mseg_fast.train.ccsa import (alignment_loss, ccsa_step, contrastive_loss, draw_locations, grid_labels,
                                  sample_pairs)
from mseg_fast.train.objective import build_optimizer
from test_train import final_weights, train


@pytest.mark.parametrize("distances, expected", [((0, 1.1, 1.1, 1.1, 0), 0.0), ((0, 0.2, 0.3, 0.1, 0), 0.388),
                                                 ((2.0, 0.2, 0.3, 0.1, 4.0), 4.388)])
def test_contrastive_loss_upstream_facts(distances, expected):
    same = torch.tensor([True, False, False, False, True])
    assert float(contrastive_loss(torch.tensor(distances), same, 1.0)) == pytest.approx(expected, abs=1e-6)


def test_domains_are_drawn_uniformly_then_crops():
    """Upstream fact: batch domains (0, 1, 0) -> crop 1 about 50 % of draws, crops 0 and 2 about 25 % each."""
    torch.manual_seed(0)
    table, counts = torch.tensor([[0, 2], [1, 0]]), torch.tensor([2, 1])  # domain 0: crops 0, 2; domain 1: crop 1
    share = torch.bincount(draw_locations(table, counts, (4, 4), 100_000)[:, 0], minlength=3).double() / 100_000
    assert torch.allclose(share, torch.tensor([0.25, 0.5, 0.25]).double(), atol=0.01)
    pairs = sample_pairs(torch.zeros(3, 4, 4, dtype=torch.long), torch.tensor([0, 1, 0]), positives=1000)
    assert torch.equal(torch.sort(torch.cat([pairs.a[:, 0:1], pairs.b[:, 0:1]], 1) % 2, 1)[0],
                       torch.tensor([[0, 1]]).repeat(1000, 1))  # every pair: crop 1 and one of 0, 2


def test_pairs_cross_domains_and_skip_ignore():
    torch.manual_seed(1)
    grid = torch.randint(0, 3, (6, 9, 9))
    grid[:, :, :4] = 255  # MSeg would pair these ignore cells as positives
    domains = torch.tensor([0, 0, 1, 1, 2, 2])
    pairs = sample_pairs(grid, domains, positives=100)
    assert int(pairs.same.sum()) == 100 and int((~pairs.same).sum()) == 300
    label_a = grid[pairs.a[:, 0], pairs.a[:, 1], pairs.a[:, 2]]
    label_b = grid[pairs.b[:, 0], pairs.b[:, 1], pairs.b[:, 2]]
    assert bool((domains[pairs.a[:, 0]] != domains[pairs.b[:, 0]]).all())
    assert bool(((label_a == label_b) == pairs.same).all())
    assert bool((label_a != 255).all() and (label_b != 255).all())


def test_no_possible_pair_ends_instead_of_looping():
    grid = torch.stack([torch.zeros(5, 5), torch.ones(5, 5)]).long()  # two domains, no shared class
    pairs = sample_pairs(grid, torch.tensor([0, 1]), positives=10)
    assert int(pairs.same.sum()) == 0 and int((~pairs.same).sum()) == 30
    with pytest.raises(ValueError, match="at least two datasets"):
        sample_pairs(grid, torch.tensor([3, 3]), positives=10)


def test_grid_labels_sit_on_the_features_pixels():
    """PSPNet on a 8k+1 crop: feature cell i lies on pixel 8i (MSeg's floor(H/8) grid drifts from it)."""
    labels = torch.arange(33 * 33).reshape(1, 33, 33)
    grid = grid_labels(labels, (5, 5))
    assert torch.equal(grid[0], labels[0, ::8, ::8])
    model = build_model("psp", 7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 33), extras=True).embedding.shape[-2:] == (5, 5)


def test_alignment_pulls_positives_together():
    """Gradient steps on the alignment term alone bring same-class embeddings of two domains closer
    and keep different classes about a margin apart."""
    torch.manual_seed(0)
    labels = torch.randint(0, 2, (2, 9, 9))
    embedding = torch.randn(2, 8, 9, 9, requires_grad=True)

    def class_distance(same: bool) -> float:  # mean distance over all cross-domain cell pairs
        a, b = embedding[0].detach().flatten(1).T, embedding[1].detach().flatten(1).T
        mask = (labels[0].flatten()[:, None] == labels[1].flatten()[None, :]) == same
        return float(torch.cdist(a, b)[mask].mean())

    before = class_distance(True)
    optimizer = torch.optim.SGD([embedding], lr=5.0)  # the mean over 4N pairs makes each push small
    for _ in range(100):
        loss, positives, negatives = alignment_loss(embedding, labels, torch.tensor([0, 1]), 200, 1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert positives == 200 and negatives == 600
    assert class_distance(True) < 0.2 * before and 0.8 < class_distance(False) > 3 * class_distance(True)


def test_ccsa_step_trains_and_reports_terms():
    torch.manual_seed(0)
    model = build_model("psp", 2).train()
    optimizer = build_optimizer(model.param_groups(), 0.003, 0.9, 1e-4)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    images = torch.randn(4, 3, 33, 33)
    images[:, :, :, :16] += 2.0  # a learnable task: the brighter left part is class 1
    labels = torch.zeros(4, 33, 33, dtype=torch.long)
    labels[:, :, :16] = 1
    batch = Batch(images, labels, torch.tensor([0, 0, 1, 1]))
    before = [p.detach().clone() for p in model.layer1.parameters()]
    results = [ccsa_step(model, batch, torch.ones(2), optimizer, scaler, "fp32", positives=20) for _ in range(6)]
    first, last = ({k: float(v) for k, v in r.terms.items()} for r in (results[0], results[-1]))
    assert set(first) == {"csa", "ce", "aux", "positives", "negatives"}
    assert first["positives"] == 20 and first["negatives"] == 60
    assert float(results[0].loss) == pytest.approx(0.25 * first["csa"] + 0.75 * first["ce"] + 0.4 * 0.75 * first["aux"])
    assert last["ce"] < 0.5 * first["ce"] and last["csa"] < first["csa"]
    assert any(not torch.equal(a, b) for a, b in zip(before, model.layer1.parameters()))


def test_ccsa_config_checks():
    with pytest.raises(UserError, match="at least two"):
        load_config(None, ["use_ccsa=True", "dataset=[a]"])
    with pytest.raises(UserError, match="set only one"):
        load_config(None, ["use_ccsa=True", "use_mgda=True", "dataset=[a, b]"])
    with pytest.raises(UserError, match="dataset_gpu_mapping"):
        load_config(None, ["use_ccsa=True", "dataset=[a, b]", "dataset_gpu_mapping={a: [0], b: [1]}"])
    recipe = load_config(REPO / "config" / "qvga" / "ccsa.yaml")
    assert recipe.use_ccsa and recipe.arch == "psp" and (recipe.ccsa_alpha, recipe.ccsa_pairs) == (0.25, 100)


def test_ccsa_training_runs_with_pspnet(demo_shards, tmp_path):
    result = train(demo_shards, tmp_path / "run", "arch=psp", "use_ccsa=True", "max_iters=2", "save_every=2",
                   "print_freq=1", "val_every=2", "train_h=65", "train_w=65", "base_lr=0.005")
    assert result.returncode == 0, result.stdout + result.stderr
    terms = re.findall(r"terms csa=([0-9.]+) ce=([0-9.]+) aux=([0-9.]+) positives=100\.0+ negatives=300\.0+",
                       result.stdout)
    assert len(terms) == 2 and all(float(t[0]) > 0 for t in terms)
    assert len(re.findall(r"val demo-\w+: mIoU", result.stdout)) == 3
    saved = final_weights(tmp_path / "run")
    groups = saved["optimizer"]["param_groups"]
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0] and groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])
