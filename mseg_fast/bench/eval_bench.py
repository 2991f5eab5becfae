"""Evaluation speed: the inference core (windows of several images batched, all on the device) against the
MSeg-style evaluator (one image at a time, two windows per forward, host-side OpenCV), same weights, images
and machine, in one run; with the share of time outside the network's forward passes and the agreement
of their predictions and mIoU."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mseg_fast.bench.mseg_eval import mseg_style_probabilities
from mseg_fast.eval.inference import InferenceSpec, predict_labels
from mseg_fast.eval.metrics import confusion
from mseg_fast.eval.mseg_metrics import mseg_scores


class TimedForward(nn.Module):
    """The network, with the seconds spent in its forward passes (synchronised on a GPU)."""

    def __init__(self, model: nn.Module, device: torch.device):
        super().__init__()
        self.model, self.device, self.seconds, self.calls = model, device, 0.0, 0
        self.num_classes = model.num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        tick = time.perf_counter()
        out = self.model(images)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - tick
        self.calls += 1
        return out


class ColourClasses(nn.Module):
    """A network plus a fixed classifier of each pixel's local mean colour.

    A randomly initialised network predicts one class everywhere, which leaves untimed the work an evaluator
    does at class boundaries (the inference core's per-pixel path). With this term the predictions have the
    regions and boundaries of the photo's colours, while the forward cost stays the network's.
    """

    def __init__(self, model: nn.Module, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.model, self.num_classes = model, model.num_classes
        self.register_buffer("weight", 4 * torch.randn(self.num_classes, 3, generator=generator))
        self.register_buffer("bias", torch.randn(self.num_classes, generator=generator))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        colour = F.avg_pool2d(images, 9, stride=1, padding=4, count_include_pad=False)
        logits = torch.einsum("kc,nchw->nkhw", self.weight, colour) + self.bias.view(1, -1, 1, 1)
        return logits + 0.01 * self.model(images)


def run_eval_bench(model: nn.Module, images: list[np.ndarray], labels: list[np.ndarray], spec: InferenceSpec,
                   images_per_batch: int, device: torch.device) -> dict:
    """Both evaluators over the same images; returns their rates, overheads and agreement."""
    num_classes = model.num_classes
    runs, predictions = {}, {}
    for name in ("mseg_style", "ours"):
        timed = TimedForward(model, device).eval()
        start = time.perf_counter()
        preds = []
        if name == "ours":
            for first in range(0, len(images), images_per_batch):
                chunk = [torch.from_numpy(i).to(device) for i in images[first:first + images_per_batch]]
                preds += [p.cpu() for p in predict_labels(timed, chunk, spec)]
        else:
            for image in images:
                probs = mseg_style_probabilities(timed, image, spec.base_size, spec.scales, spec.crop, None, device)
                preds.append(torch.from_numpy(probs.argmax(-1)))
        seconds = time.perf_counter() - start
        # The label maps are COCO's; a model with fewer classes (--model) is scored on those it has, the rest ignored.
        matrix = sum(confusion(p, torch.from_numpy(np.where(lab < num_classes, lab, 255).astype(np.int64)), num_classes)
                     for p, lab in zip(preds, labels))
        predictions[name] = preds
        runs[name] = {"images_per_s": round(len(images) / seconds, 3), "seconds": round(seconds, 2),
                      "outside_forward_share": round(1 - timed.seconds / seconds, 3), "forward_calls": timed.calls,
                      "miou": round(100 * mseg_scores(matrix)["miou"], 3)}
    same = sum(int((a == b).sum()) for a, b in zip(predictions["ours"], predictions["mseg_style"]))
    total = sum(p.numel() for p in predictions["ours"])
    worst = min(float((a == b).double().mean()) for a, b in zip(predictions["ours"], predictions["mseg_style"]))
    return {"runs": runs, "pixel_agreement": round(same / total, 6), "worst_image_agreement": round(worst, 6),
            "miou_difference": round(abs(runs["ours"]["miou"] - runs["mseg_style"]["miou"]), 4),
            "speedup": round(runs["ours"]["images_per_s"] / runs["mseg_style"]["images_per_s"], 2)}
