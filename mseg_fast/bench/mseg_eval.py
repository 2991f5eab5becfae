"""An evaluator written the way MSEG_REFERENCE.md §7.3 describes MSeg's: one image at a time, a batch of two
per forward (the window and its mirror), padding, accumulation and the resize back on the host with
OpenCV. It is the reference the inference core is checked against (same predictions) and the baseline
its speed is measured against."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from mseg_fast.constants import IMAGENET_MEAN, IMAGENET_STD


def mseg_style_probabilities(model, image_rgb: np.ndarray, base_size: int, scales: tuple[float, ...], crop: int,
                             projection: np.ndarray | None, device: torch.device) -> np.ndarray:
    """H x W x K probabilities of one HWC uint8 RGB image, MSeg's way."""
    height, width = image_rgb.shape[:2]
    image = image_rgb.astype(np.float32)  # MSeg reads images as float 0..255
    total = None
    for scale in scales:
        short = round(scale * base_size)
        new_h, new_w = (round(short * height / width), short) if height > width else (short, round(short * width / height))
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        pad_h, pad_w = max(crop - new_h, 0), max(crop - new_w, 0)
        top, left = pad_h // 2, pad_w // 2
        padded = cv2.copyMakeBorder(resized, top, pad_h - top, left, pad_w - left, cv2.BORDER_CONSTANT,
                                    value=list(IMAGENET_MEAN))
        grid_h, grid_w = padded.shape[:2]
        stride = math.ceil(crop * 2 / 3)
        prediction, count = None, np.zeros((grid_h, grid_w), np.float32)
        for row in range(math.ceil(max(grid_h - crop, 0) / stride) + 1):
            for col in range(math.ceil(max(grid_w - crop, 0) / stride) + 1):
                y0 = min(row * stride + crop, grid_h) - crop
                x0 = min(col * stride + crop, grid_w) - crop
                window = (padded[y0:y0 + crop, x0:x0 + crop] - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
                batch = torch.from_numpy(np.ascontiguousarray(window.transpose(2, 0, 1), np.float32))[None].to(device)
                with torch.no_grad():
                    logits = model(torch.cat([batch, batch.flip(-1)])).float()
                    probs = torch.softmax(logits, dim=1)
                    if projection is not None:
                        probs = torch.einsum("kc,nchw->nkhw", torch.from_numpy(projection).to(probs), probs)
                    probs = (probs[0] + probs[1].flip(-1)) / 2
                out = probs.permute(1, 2, 0).cpu().numpy()
                if prediction is None:
                    prediction = np.zeros((grid_h, grid_w, out.shape[2]), np.float32)
                prediction[y0:y0 + crop, x0:x0 + crop] += out
                count[y0:y0 + crop, x0:x0 + crop] += 1
        prediction /= count[:, :, None]
        prediction = prediction[top:top + new_h, left:left + new_w]
        # MSeg resizes all channels in one call; OpenCV 5 takes fewer channels per image, so a few at a time
        # (the same bilinear interpolation per channel).
        full = np.concatenate([cv2.resize(prediction[:, :, c:c + 4], (width, height), interpolation=cv2.INTER_LINEAR
                                          ).reshape(height, width, -1) for c in range(0, prediction.shape[2], 4)],
                              axis=2)
        total = full if total is None else total + full
    return total / len(scales)
