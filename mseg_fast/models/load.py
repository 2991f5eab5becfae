"""Loading weights strictly, and saying exactly what did not match.

MSeg loads its released models non-strictly, so a renamed key silently leaves layers random
(reference §9, item 14). Here every load is strict: missing keys, unexpected keys and shape
mismatches are listed in the error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from mseg_fast.digest import file_sha256
from mseg_fast.errors import UserError
from mseg_fast.models.hrnet import HRNet, WIDTHS
from mseg_fast.models.pspnet import DEPTHS, PSPNet

HEAD_PREFIX = "last_layer."
# Parts of the HRNet ImageNet classification checkpoint that a segmentation model does not have.
CLASSIFIER_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")
PSP_HEAD_PREFIXES = ("ppm.", "cls.", "aux.")
# The deep-base ResNet's stem, as PSPNet's `layer0` Sequential numbers it.
_DEEP_BASE_STEM = {"conv1": "layer0.0", "bn1": "layer0.1", "conv2": "layer0.3", "bn2": "layer0.4",
                   "conv3": "layer0.6", "bn3": "layer0.7"}
_SHOWN = 8


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Drop a DDP/DataParallel `module.` prefix (MSeg saved wrapped models)."""
    if state and all(key.startswith(prefix) for key in state):
        return {key[len(prefix):]: value for key, value in state.items()}
    return dict(state)


def mismatch_report(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> list[str]:
    """Lines naming the missing and unexpected keys and the shape mismatches (empty when all match)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(given[k].shape)}, model {tuple(expected[k].shape)}"
              for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
    lines = []
    for title, items in (("missing from the checkpoint", missing), ("not in the model", unexpected),
                         ("shape differs", shapes)):
        if items:
            shown = ", ".join(items[:_SHOWN]) + (f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")
            lines.append(f"{len(items)} {title}: {shown}")
    return lines


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load every tensor of `state` into `model`, or raise naming every difference."""
    state = strip_prefix(state)
    problems = mismatch_report(model.state_dict(), state)
    if problems:
        raise UserError(f"{source} does not match the model ({type(model).__name__}, "
                        f"{getattr(model, 'num_classes', '?')} classes):\n  " + "\n  ".join(problems))
    model.load_state_dict(state, strict=True)


def _deep_base_key(key: str) -> str:
    """`conv2.weight` -> `layer0.3.weight`; every other key as it is."""
    first, dot, rest = key.partition(".")
    return _DEEP_BASE_STEM[first] + dot + rest if first in _DEEP_BASE_STEM else key


def load_imagenet_backbone(model: HRNet | PSPNet, path: str | Path) -> str:
    """Initialise the backbone from an ImageNet classification checkpoint.

    HRNet: `hrnetv2_w48_imagenet_pretrained.pth` (or the W18 one). PSPNet: the deep-base ResNet of
    its depth (`resnet101_v2.pth` layout: `conv1..3`/`bn1..3` stem, `layer1-4`, `fc`). Every
    backbone key of the model must be in the file with its shape; the file's classification parts
    are dropped; the segmentation heads keep their initialisation.

    Returns:
        A one-line summary of what was loaded.
    """
    try:
        state = strip_prefix(read_weights_file(path))
    except UserError as error:
        raise UserError(f"pretrained={error}; docs/weights.md says where to download the ImageNet weights") from None
    if isinstance(model, PSPNet):
        classifier, heads = ("fc.",), PSP_HEAD_PREFIXES
        state = {_deep_base_key(k): v for k, v in state.items()}
        name = f"deep-base ResNet-{model.layers}"
    else:
        classifier, heads = CLASSIFIER_PREFIXES, (HEAD_PREFIX,)
        name = f"HRNet-W{model.width}"
    dropped = [k for k in state if k.startswith(classifier)]
    backbone = {k: v for k, v in state.items() if not k.startswith(classifier)}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(heads)}
    problems = mismatch_report(expected, backbone)
    if problems:
        raise UserError(f"pretrained={path} is not a {name} ImageNet checkpoint for this model (docs/weights.md names "
                        f"the file for each arch):\n  " + "\n  ".join(problems))
    model.load_state_dict({**model.state_dict(), **backbone}, strict=True)
    head = len(model.state_dict()) - len(expected)
    # The file's sha256 names which weights the run started from, to compare with what was downloaded.
    return (f"{path} (sha256 {file_sha256(path)}): {len(backbone)} backbone tensors loaded, "
            f"{len(dropped)} classification tensors dropped, {head} head tensors ({', '.join(p + '*' for p in heads)}) keep their initialisation")


def read_weights_file(path: str | Path) -> dict:
    """A file torch.save wrote (checkpoint, release or ImageNet weights), read as data only (weights_only:
    a checkpoint must not run code when read).

    Raises:
        UserError: missing, a folder, truncated, or not a torch file; never torch's own advice to unpickle
            arbitrary code.
    """
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a weights file") from None
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a damaged file; all mean the same
        reason = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        if "weights_only" in reason or "Weights only" in reason:
            reason = "it holds objects other than tensors and plain data"
        raise UserError(f"{path}: not a readable weights file (truncated, or not written by torch.save: {reason})"
                        ) from None
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: holds a {type(loaded).__name__}, not a dictionary of weights")
    return loaded


def model_state(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The network's tensors from our checkpoints ('model'), MSeg's ('state_dict') or a bare state dict."""
    for key in ("model", "state_dict"):
        if isinstance(checkpoint.get(key), dict):
            return strip_prefix(checkpoint[key])
    return strip_prefix(checkpoint)


def load_model(path: str | Path) -> HRNet | PSPNet:
    """A trained network from an MSeg release file or one of our checkpoints, in eval mode.

    The architecture is read off the tensors (HRNet: width from the first transition; PSPNet: depth
    from layer3's block count; classes from the head). The returned module's forward takes
    normalised NCHW images and returns logits at the input resolution.
    """
    state = model_state(read_weights_file(path))
    if "cls.4.weight" in state:
        blocks = len({k.split(".")[1] for k in state if k.startswith("layer3.")})
        layers = next((d for d, b in DEPTHS.items() if b[2] == blocks), None)
        if layers is None:
            raise UserError(f"{path}: PSPNet layer3 has {blocks} blocks, which matches no ResNet depth "
                            f"{sorted(DEPTHS)}")
        model = PSPNet(int(state["cls.4.weight"].shape[0]), layers)
    else:
        try:
            width = int(state["transition1.0.0.weight"].shape[0])
            num_classes = int(state["last_layer.3.weight"].shape[0])
        except KeyError as error:
            raise UserError(f"{path} holds no HRNet or PSPNet segmentation weights (no {error.args[0]})") from None
        if width not in WIDTHS.values():
            raise UserError(f"{path}: HRNet width {width} is not one of {sorted(WIDTHS.values())}")
        model = HRNet(num_classes, width)
    load_strict(model, state, str(path))
    return model.eval()
