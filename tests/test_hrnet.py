"""HRNetV2 against MSeg's key layout, sizes and numerics; strict loading."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F

import mseg_fast
from mseg_fast.errors import UserError
from mseg_fast.models.factory import build_model
from mseg_fast.models.hrnet import BN_MOMENTUM, HighResolutionModule
from mseg_fast.models.load import load_imagenet_backbone, load_strict

KEYS_FILE = "docs/MSEG_HRNET_W48_STATE_DICT_KEYS.txt"


@pytest.fixture(scope="module")
def w48():
    return build_model("hrnet_w48", 194)


@pytest.fixture(scope="module")
def w18():
    torch.manual_seed(0)
    return build_model("hrnet_w18", 7).eval()


def test_w48_keys_and_shapes_are_mseg_s(w48, mseg_api):
    lines = [line.rstrip("\n").split("\t") for line in open(mseg_api.parent / KEYS_FILE) if not line.startswith("#")]
    expected = {key.removeprefix("module."): tuple(eval(shape)) for key, shape in lines}
    ours = {key: tuple(value.shape) for key, value in w48.state_dict().items()}
    assert len(expected) == 1839 and list(ours) == list(expected) and ours == expected


def test_w48_parameter_counts(w48):
    params = sum(p.numel() for p in w48.parameters())
    assert params == 65_985_554
    head = 720 + 1  # a class adds one 720-weight row and one bias
    assert params + (19 - 194) * head == 65_859_379 and params + (316 - 194) * head == 66_073_516


def test_batchnorm_and_init_follow_mseg(w48):
    norms = [m for m in w48.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 306 and all(m.momentum == BN_MOMENTUM == 0.01 and m.eps == 1e-5 for m in norms)
    weight = w48.stage3[0].branches[0][0].conv1.weight
    assert abs(float(weight.detach().std()) - 0.001) < 1e-4


def test_branch_sizes_at_713(w18):
    sizes = []
    hook = w18.stage4[-1].register_forward_hook(lambda m, i, out: sizes.extend(tuple(x.shape[-2:]) for x in out))
    with torch.no_grad():
        logits = w18(torch.randn(1, 3, 713, 713))
    hook.remove()
    assert sizes == [(179, 179), (90, 90), (45, 45), (23, 23)] and logits.shape == (1, 7, 713, 713)


@pytest.mark.parametrize("size", [(97, 113), (65, 81), (73, 73)])
def test_w18_forward_backward_at_odd_sizes(size):
    model = build_model("hrnet_w18", 5).train()
    images = torch.randn(2, 3, *size)
    logits = model(images)
    assert logits.shape == (2, 5, *size)
    loss = F.cross_entropy(logits, torch.randint(0, 5, (2, *size)))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_final_upsample_is_align_corners_true():
    torch.manual_seed(2)
    model = build_model("hrnet_w18", 7).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # MSeg's tiny init gives near-constant logits; make them vary
            parameter.normal_(0.0, 0.05)
        images = torch.randn(1, 3, 65, 81)
        coarse = model.last_layer(model.features(images))
        expected = F.interpolate(coarse, size=(65, 81), mode="bilinear", align_corners=True)
        assert torch.equal(model(images), expected)
        assert not torch.allclose(F.interpolate(coarse, size=(65, 81), mode="bilinear", align_corners=False), expected)


def test_fusion_sums_bilinear_resized_coarser_branches():
    torch.manual_seed(1)
    module = HighResolutionModule((4, 8)).eval()
    xs = [torch.randn(1, 4, 9, 11), torch.randn(1, 8, 5, 6)]
    with torch.no_grad():
        out = module([x.clone() for x in xs])
        b0, b1 = module.branches[0](xs[0].clone()), module.branches[1](xs[1].clone())
        up = F.interpolate(module.fuse_layers[0][1](b1), size=(9, 11), mode="bilinear", align_corners=False)
        assert torch.equal(out[0], torch.relu(b0 + up))
        assert torch.equal(out[1], torch.relu(module.fuse_layers[1][0](b0) + b1))


def test_round_trip_with_and_without_module_prefix(w18, tmp_path):
    images = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        expected = w18(images)
    mseg_style = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in w18.state_dict().items()}}
    torch.save(mseg_style, tmp_path / "mseg.pth")
    torch.save({"model": w18.state_dict()}, tmp_path / "ours.pth")
    for name in ("mseg.pth", "ours.pth"):
        model = mseg_fast.load_model(tmp_path / name)
        assert not model.training and model.num_classes == 7 and model.width == 18
        with torch.no_grad():
            assert torch.equal(model(images), expected)


def test_strict_load_reports_every_mismatch(w18):
    state = dict(w18.state_dict())
    del state["stage2.0.branches.0.0.conv1.weight"]
    state["stage9.extra.weight"] = torch.zeros(1)
    state["last_layer.3.weight"] = torch.zeros(3, 270, 1, 1)
    with pytest.raises(UserError) as error:
        load_strict(build_model("hrnet_w18", 7), state, "ckpt.pth")
    message = str(error.value)
    assert "1 missing from the checkpoint: stage2.0.branches.0.0.conv1.weight" in message
    assert "1 not in the model: stage9.extra.weight" in message
    assert "last_layer.3.weight: checkpoint (3, 270, 1, 1), model (7, 270, 1, 1)" in message


def test_imagenet_backbone_is_loaded_strictly(w18, tmp_path):
    backbone = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in w18.state_dict().items()
                if not k.startswith("last_layer.")}
    classifier = {"incre_modules.0.0.conv1.weight": torch.zeros(32, 18, 1, 1), "classifier.weight": torch.zeros(1000, 2048),
                  "final_layer.0.weight": torch.zeros(2048, 1024, 1, 1), "downsamp_modules.0.0.weight": torch.zeros(1)}
    torch.save({**backbone, **classifier}, tmp_path / "imagenet.pth")
    model = build_model("hrnet_w18", 7)
    head_before = model.last_layer[3].weight.clone()
    summary = load_imagenet_backbone(model, tmp_path / "imagenet.pth")
    assert f"{len(backbone)} backbone tensors loaded, 4 classification tensors dropped, 9 head tensors" in summary
    assert torch.equal(model.stage4[2].branches[3][3].conv2.weight, backbone["stage4.2.branches.3.3.conv2.weight"])
    assert torch.equal(model.last_layer[3].weight, head_before)
    del backbone["layer1.0.conv1.weight"]
    torch.save(backbone, tmp_path / "broken.pth")
    with pytest.raises(UserError, match="1 missing from the checkpoint: layer1.0.conv1.weight"):
        load_imagenet_backbone(build_model("hrnet_w18", 7), tmp_path / "broken.pth")
    assert hashlib.sha256((tmp_path / "imagenet.pth").read_bytes()).hexdigest() in summary, "the log names the file"
    with pytest.raises(UserError, match=r"pretrained=.*nope.pth: no such file; docs/weights.md says where"):
        load_imagenet_backbone(model, tmp_path / "nope.pth")
    # Another network's ImageNet weights (PSPNet's ResNet) are refused with the page that names the right file.
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3), "layer1.0.conv1.weight": torch.zeros(64, 128, 1, 1)},
               tmp_path / "resnet50_v2.pth")
    with pytest.raises(UserError, match=r"not a HRNet-W18 ImageNet checkpoint .*docs/weights.md"):
        load_imagenet_backbone(model, tmp_path / "resnet50_v2.pth")
