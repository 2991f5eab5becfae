"""MGDA: the min-norm solver, and agreement with the standard step where they must agree."""

from __future__ import annotations

import copy

import torch

from helpers import REPO
from mseg_fast.config import load_config
from mseg_fast.data.batch import Batch
from mseg_fast.models.factory import build_model
from mseg_fast.train.loop import standard_step
from mseg_fast.train.mgda import min_norm_weights, mgda_step, project_to_simplex
from mseg_fast.train.objective import derive_max_iters


def test_simplex_projection():
    assert torch.allclose(project_to_simplex(torch.tensor([0.2, 0.3, 0.5])), torch.tensor([0.2, 0.3, 0.5]))
    assert torch.allclose(project_to_simplex(torch.tensor([2.0, 0.0])), torch.tensor([1.0, 0.0]))
    projected = project_to_simplex(torch.tensor([0.9, 0.8, -1.0]))
    assert torch.allclose(projected, torch.tensor([0.55, 0.45, 0.0])) and abs(float(projected.sum()) - 1) < 1e-6


def test_min_norm_weights():
    # Orthogonal gradients of squared norms 1 and 4: minimise c1^2 + 4 c2^2 on the simplex -> (0.8, 0.2).
    assert torch.allclose(min_norm_weights(torch.tensor([[1.0, 0.0], [0.0, 4.0]])), torch.tensor([0.8, 0.2]).double(),
                          atol=2e-3)
    # Equal gradients: every combination has the same norm; the solver keeps its uniform start.
    assert torch.allclose(min_norm_weights(torch.ones(3, 3)), torch.full((3,), 1 / 3).double())
    # Opposed gradients of equal size cancel at (0.5, 0.5).
    assert torch.allclose(min_norm_weights(torch.tensor([[1.0, -1.0], [-1.0, 1.0]])), torch.tensor([0.5, 0.5]).double(),
                          atol=1e-3)


def test_mgda_equals_the_standard_step_when_datasets_agree():
    """Two 'datasets' with identical crops have identical gradients: MGDA's weights stay uniform and its
    step is MSeg's plain step."""
    torch.manual_seed(0)
    model = build_model("hrnet_w18", 4).train()
    twin = copy.deepcopy(model)
    images, labels = torch.randn(1, 3, 65, 65), torch.randint(0, 4, (1, 65, 65))
    batch = Batch(images.repeat(2, 1, 1, 1), labels.repeat(2, 1, 1), torch.tensor([0, 1]))
    weights = torch.ones(2)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, twin)]
    plain = standard_step(model, batch, weights, optimizers[0], scaler, "fp32")
    mgda = mgda_step(twin, batch, weights, optimizers[1], scaler, "fp32")
    assert mgda.scales == {0: 0.5, 1: 0.5} and abs(mgda.loss - plain.loss) < 1e-6
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_mgda_recipe():
    cfg = load_config(REPO / "config" / "1080" / "mseg-mgda.yaml")
    assert cfg.use_mgda and derive_max_iters(cfg.num_examples, cfg.batch_size, len(cfg.dataset)) == 200_000
