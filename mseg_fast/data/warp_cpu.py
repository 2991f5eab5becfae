"""The fused augmentation on the CPU with OpenCV: the torch fallback's twin of pipelines/processing.py."""

from __future__ import annotations

import cv2
import numpy as np

from mseg_fast.constants import IGNORE_LABEL, IMAGENET_MEAN, IMAGENET_STD
from mseg_fast.data.geometry import Augment, blur_drawn, crop_map, matrix, to_opencv

_MEAN = np.array(IMAGENET_MEAN, np.float32)
_INV_STD = (1.0 / np.array(IMAGENET_STD, np.float32)).astype(np.float32)


def _outside_source(inverse: np.ndarray, height: int, width: int, size: tuple[int, int]) -> np.ndarray:
    """Window pixels whose source point lies outside the image: a nearest-neighbour warp of a
    2x2 image of ones through the map rescaled to it is the exact bounds test, at crop cost."""
    rescaled = inverse * np.array([[2.0 / width], [2.0 / height]])
    inside = cv2.warpAffine(np.ones((2, 2), np.uint8), to_opencv(rescaled), size,
                            flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return inside == 0


def warp_sample(image: np.ndarray, label: np.ndarray, u, aug: Augment, blur_kernel: int, blur_sigma: float,
                bgr: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Warp the visible window straight from the source, blur it, pad it to the crop.

    Args:
        image: HxWx3 uint8, RGB (or BGR with bgr=True: the crop then stays BGR).
        label: HxW uint8/uint16.

    Returns:
        The crop as HxWx3 float32 in 0..255 (fill and padding exactly the mean) and its label.
    """
    height, width = label.shape
    inverse, window, rotate = crop_map(float(height), float(width), u, aug)
    win_h, win_w, top, left = (int(v) for v in window)
    inverse = matrix(inverse)
    warp = to_opencv(inverse)
    mean = tuple(float(v) for v in (IMAGENET_MEAN[::-1] if bgr else IMAGENET_MEAN))
    # Warp the uint8 source and convert only the crop (measured: converting the 1080p source to
    # float costs 3.5 ms, a float warp 3.9 ms, a uint8 warp ~3 ms). MSeg works in float, so the
    # fill must be the exact mean: pixels outside the source are set to it after conversion.
    crop = cv2.warpAffine(image, warp, (win_w, win_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(round(v) for v in mean)).astype(np.float32)
    if rotate:  # only rotation (rotated-out corners) takes points outside the source
        crop[_outside_source(inverse, height, width, (win_w, win_h))] = mean
    crop_label = cv2.warpAffine(label, warp, (win_w, win_h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE_LABEL)
    if blur_drawn(u, aug):
        crop = cv2.GaussianBlur(crop, (blur_kernel, blur_kernel), blur_sigma)  # reflect-101 borders, as MSeg
    bottom, right = aug.crop_h - win_h - top, aug.crop_w - win_w - left
    if top or left or bottom or right:
        crop = cv2.copyMakeBorder(crop, top, bottom, left, right, cv2.BORDER_CONSTANT, value=mean)
        crop_label = cv2.copyMakeBorder(crop_label, top, bottom, left, right, cv2.BORDER_CONSTANT, value=IGNORE_LABEL)
    return crop, crop_label


def normalize_chw(crop: np.ndarray, dtype=np.float32, out: np.ndarray | None = None, bgr: bool = False) -> np.ndarray:
    """(x - mean) / std per channel, HWC -> CHW (RGB order; a BGR crop is reordered on the way),
    into `out` when given (e.g. a batch slot)."""
    if out is None or out.dtype != np.float32:
        result = normalize_chw(crop, np.float32, np.empty((3, *crop.shape[:2]), np.float32), bgr)
        if out is None:
            return result.astype(dtype, copy=False)
        out[...] = result
        return out
    for channel in range(3):
        np.subtract(crop[:, :, 2 - channel if bgr else channel], _MEAN[channel], out=out[channel])
        out[channel] *= _INV_STD[channel]
    return out
