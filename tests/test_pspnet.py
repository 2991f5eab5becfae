"""PSPNet (reference §4.3): deep-base dilated ResNet, pyramid pooling, heads, key layout, loading."""

from __future__ import annotations

import pytest
import torch

import mseg_fast
from mseg_fast.errors import UserError
from mseg_fast.models.factory import build_model
from mseg_fast.models.load import load_imagenet_backbone

# torchvision's ResNet-50/101 have 25,557,032 / 44,549,160 parameters; the deep-base stem (three 3x3
# convs to 128 channels) and layer1's wider input add 123,776.
DEEP_BASE = {50: 25_680_808, 101: 44_672_936}
STEM = {"layer0.0": "conv1", "layer0.1": "bn1", "layer0.3": "conv2", "layer0.4": "bn2", "layer0.6": "conv3",
        "layer0.7": "bn3"}


@pytest.fixture(scope="module")
def psp50():
    torch.manual_seed(0)
    return build_model("psp", 5, 50)


@pytest.mark.parametrize("layers", [50, 101])
def test_backbone_is_the_deep_base_resnet(layers):
    model = build_model("psp", 150, layers)
    backbone = sum(p.numel() for n, p in model.named_parameters() if n.startswith("layer"))
    assert backbone + 2048 * 1000 + 1000 == DEEP_BASE[layers]  # plus the ImageNet classifier it drops
    assert len(model.layer3) == {50: 6, 101: 23}[layers]


def test_key_layout_and_dilation(psp50):
    shapes = {k: tuple(v.shape) for k, v in psp50.state_dict().items()}
    assert shapes["layer0.0.weight"] == (64, 3, 3, 3) and shapes["layer0.6.weight"] == (128, 64, 3, 3)
    assert shapes["layer1.0.downsample.0.weight"] == (256, 128, 1, 1)
    assert shapes["ppm.features.3.1.weight"] == (512, 2048, 1, 1) and "ppm.features.3.2.running_var" in shapes
    assert shapes["cls.0.weight"] == (512, 4096, 3, 3) and shapes["cls.4.weight"] == (5, 512, 1, 1)
    assert shapes["aux.0.weight"] == (256, 1024, 3, 3) and shapes["aux.4.bias"] == (5,)
    for layer, dilation in ((psp50.layer3, 2), (psp50.layer4, 4)):
        assert all(block.conv2.dilation == (dilation, dilation) and block.conv2.stride == (1, 1) for block in layer)
        assert layer[0].downsample[0].stride == (1, 1)


def test_outputs_at_odd_and_even_sizes(psp50):
    psp50.train()
    out = psp50(torch.randn(2, 3, 65, 65), extras=True)
    assert out.logits.shape == out.aux.shape == (2, 5, 65, 65)
    assert out.embedding.shape == (2, 2048, 9, 9)  # output stride 8: (65 - 1) / 8 + 1
    psp50.eval()
    with torch.no_grad():
        logits = psp50(torch.randn(1, 3, 48, 64))
        assert logits.shape == (1, 5, 48, 64) and psp50(torch.randn(1, 3, 33, 33), extras=True).aux is None


def test_head_learns_ten_times_faster(psp50):
    (backbone, slow), (head, fast) = psp50.param_groups()
    names = {id(p): n for n, p in psp50.named_parameters()}
    assert (slow, fast) == (1.0, 10.0) and len(backbone) + len(head) == len(list(psp50.parameters()))
    assert {names[id(p)].split(".")[0] for p in head} == {"ppm", "cls", "aux"}


def test_imagenet_deep_base_is_loaded_strictly(psp50, tmp_path):
    def resnet_key(key: str) -> str:
        prefix = ".".join(key.split(".")[:2])
        return STEM[prefix] + key[len(prefix):] if prefix in STEM else key

    backbone = {resnet_key(k): torch.randn_like(v.float()).to(v.dtype) for k, v in psp50.state_dict().items()
                if k.startswith("layer")}
    torch.save({**backbone, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}, tmp_path / "r50.pth")
    model = build_model("psp", 5, 50)
    head = model.cls[4].weight.clone()
    summary = load_imagenet_backbone(model, tmp_path / "r50.pth")
    assert f"{len(backbone)} backbone tensors loaded, 2 classification tensors dropped" in summary
    assert torch.equal(model.layer0[3].weight, backbone["conv2.weight"])
    assert torch.equal(model.layer4[2].conv3.weight, backbone["layer4.2.conv3.weight"])
    assert torch.equal(model.cls[4].weight, head)
    with pytest.raises(UserError, match="not a deep-base ResNet-101 ImageNet checkpoint"):
        load_imagenet_backbone(build_model("psp", 5, 101), tmp_path / "r50.pth")


def test_load_model_reads_pspnet_releases(psp50, tmp_path):
    torch.save({"state_dict": {f"module.{k}": v for k, v in psp50.state_dict().items()}}, tmp_path / "psp.pth")
    model = mseg_fast.load_model(tmp_path / "psp.pth")
    assert model.layers == 50 and model.num_classes == 5 and not model.training
    images = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        assert torch.equal(model(images), psp50.eval()(images))
