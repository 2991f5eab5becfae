"""MSeg's own transform chain (reference §3.7), step by step on the full image, in float32.

Two uses: the reference that pinned-parameter tests compare both backends against, and the
"MSeg-style" baseline of tools/bench_loader.py. It takes the same uniforms as
geometry.crop_map, so identical draws mean identical parameters.
"""

from __future__ import annotations

import cv2
import numpy as np

from mseg_fast.constants import IGNORE_LABEL, IMAGENET_MEAN
from mseg_fast.data.geometry import (U_ANGLE, U_BLUR, U_CROP_X, U_CROP_Y, U_FLIP, U_ROTATE, U_SCALE, Augment,
                                     resized_size)


def mseg_chain(image: np.ndarray, label: np.ndarray, u, aug: Augment, blur_kernel: int = 5,
               blur_sigma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Apply ResizeShort, RandScale, RandRotate, GaussianBlur, HFlip and Crop as MSeg does.

    Args:
        image: HxWx3 float32 RGB in 0..255.
        label: HxW integer label map.
        u: the uniforms (geometry.NUM_DRAWS).
        blur_sigma: None derives it from the kernel size, OpenCV's rule (1.1 for 5x5), as MSeg.

    Returns:
        The crop (float32, 0..255, not normalised) and its label.
    """
    mean = tuple(float(v) for v in IMAGENET_MEAN)
    new_h, new_w = (int(v) for v in resized_size(float(image.shape[0]), float(image.shape[1]), aug.short_size))
    image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    scale = aug.scale_min + u[U_SCALE] * (aug.scale_max - aug.scale_min)
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    if u[U_ROTATE] < aug.rotate_prob:
        angle = aug.rotate_min + u[U_ANGLE] * (aug.rotate_max - aug.rotate_min)
        h, w = label.shape
        rotation = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1)
        image = cv2.warpAffine(image, rotation, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=mean)
        label = cv2.warpAffine(label, rotation, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=IGNORE_LABEL)
    if u[U_BLUR] < aug.blur_prob:
        image = cv2.GaussianBlur(image, (blur_kernel, blur_kernel), blur_sigma or 0)
    if u[U_FLIP] < aug.flip_prob:
        image, label = cv2.flip(image, 1), cv2.flip(label, 1)
    h, w = label.shape
    pad_h, pad_w = max(aug.crop_h - h, 0), max(aug.crop_w - w, 0)
    if pad_h or pad_w:
        top, left = pad_h // 2, pad_w // 2
        image = cv2.copyMakeBorder(image, top, pad_h - top, left, pad_w - left, cv2.BORDER_CONSTANT, value=mean)
        label = cv2.copyMakeBorder(label, top, pad_h - top, left, pad_w - left, cv2.BORDER_CONSTANT,
                                   value=IGNORE_LABEL)
    h, w = label.shape
    if aug.random_crop:
        off_y = min(int(u[U_CROP_Y] * (h - aug.crop_h + 1)), h - aug.crop_h)
        off_x = min(int(u[U_CROP_X] * (w - aug.crop_w + 1)), w - aug.crop_w)
    else:
        off_y, off_x = (h - aug.crop_h) // 2, (w - aug.crop_w) // 2
    return (image[off_y:off_y + aug.crop_h, off_x:off_x + aug.crop_w],
            label[off_y:off_y + aug.crop_h, off_x:off_x + aug.crop_w])
