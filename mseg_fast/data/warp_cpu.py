"""The fused augmentation on the CPU with OpenCV: the torch fallback's twin of mseg_fast/dali/processing.py.

Two spellings of one augmentation: `warp_sample` (plain: allocate, pad, return the 0..255 crop) is
the readable reference and serves validation; `warp_into` writes the normalised crop straight into
a batch slot and is the training hot path. Tests hold them bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class _Plan:
    """One sample's warp: the OpenCV map, the window (size and place in the crop), what was drawn."""

    inverse: np.ndarray  # continuous coordinates (for the bounds test)
    warp: np.ndarray  # OpenCV's convention
    win_h: int
    win_w: int
    top: int
    left: int
    rotate: bool
    blur: bool
    mean: tuple[float, float, float]  # the fill, in the crop's channel order


def _plan(height: int, width: int, u, aug: Augment, bgr: bool) -> _Plan:
    inverse, window, rotate = crop_map(float(height), float(width), u, aug)
    win_h, win_w, top, left = (int(v) for v in window)
    inverse = matrix(inverse)
    return _Plan(inverse, to_opencv(inverse), win_h, win_w, top, left, bool(rotate), bool(blur_drawn(u, aug)),
                 tuple(float(v) for v in (IMAGENET_MEAN[::-1] if bgr else IMAGENET_MEAN)))


def _warp_image(image: np.ndarray, plan: _Plan, dst: np.ndarray | None = None) -> np.ndarray:
    """The window of a uint8 image with 3 channels (or 4: the fourth's border is 0)."""
    # Warp the uint8 source and convert only the crop (measured: converting the 1080p source to
    # float costs 3.5 ms, a float warp 3.9 ms, a uint8 warp ~3 ms). MSeg works in float, so the
    # fill must be the exact mean: pixels outside the source are set to it after conversion.
    return cv2.warpAffine(image, plan.warp, (plan.win_w, plan.win_h), dst=dst,
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(*(round(v) for v in plan.mean), 0))


def _warp_label(label: np.ndarray, plan: _Plan, dst: np.ndarray | None = None) -> np.ndarray:
    return cv2.warpAffine(label, plan.warp, (plan.win_w, plan.win_h), dst=dst,
                          flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=IGNORE_LABEL)


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
    plan = _plan(height, width, u, aug, bgr)
    crop = _warp_image(image, plan).astype(np.float32)
    if plan.rotate:  # only rotation (rotated-out corners) takes points outside the source
        crop[_outside_source(plan.inverse, height, width, (plan.win_w, plan.win_h))] = plan.mean
    crop_label = _warp_label(label, plan)
    if plan.blur:
        crop = cv2.GaussianBlur(crop, (blur_kernel, blur_kernel), blur_sigma)  # reflect-101 borders, as MSeg
    top, left = plan.top, plan.left
    bottom, right = aug.crop_h - plan.win_h - top, aug.crop_w - plan.win_w - left
    if top or left or bottom or right:
        crop = cv2.copyMakeBorder(crop, top, bottom, left, right, cv2.BORDER_CONSTANT, value=plan.mean)
        crop_label = cv2.copyMakeBorder(crop_label, top, bottom, left, right, cv2.BORDER_CONSTANT, value=IGNORE_LABEL)
    return crop, crop_label


class Scratch:
    """Reused buffers for `warp_into`, one set per worker. Each use views the front of a flat buffer
    at the size it needs, so the view is contiguous (OpenCV writes into it in place) and nothing is
    allocated per sample: fresh large arrays fault their pages in every time (measured in the loader's
    workers: 16,000 page faults per batch of 8 crops, 10,000 with reused memory)."""

    def __init__(self, crop_h: int, crop_w: int):
        pixels = crop_h * crop_w
        self._buffers = {"bgra": np.empty(0, np.uint8), "warped": np.empty(pixels * 4, np.uint8),
                         "u8": np.empty(pixels * 3, np.uint8), "float": np.empty(pixels * 3, np.float32),
                         "blurred": np.empty(pixels * 3, np.float32), "plane": np.empty(pixels, np.float32),
                         **{f"uint8 {c}": np.empty(pixels, np.uint8) for c in range(4)},
                         **{f"float32 {c}": np.empty(pixels, np.float32) for c in range(3)}}
        self._filled: tuple[float, ...] | None = None  # the colour "fill" holds

    def view(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        size = int(np.prod(shape))
        if self._buffers[name].size < size:  # only "bgra", which is source-sized, grows
            self._buffers[name] = np.empty(size, self._buffers[name].dtype)
        return self._buffers[name][:size].reshape(shape)

    def fill(self, colour: tuple[float, float, float], shape: tuple[int, int, int]) -> np.ndarray:
        """An HxWx3 float32 image of one colour (any front part of the flat buffer is one, at any size)."""
        if self._filled != colour:
            self._buffers["fill"] = np.tile(np.array(colour, np.float32), self._buffers["u8"].size // 3)
            self._filled = colour
        return self.view("fill", shape)


def warp_into(image: np.ndarray, label: np.ndarray, u, aug: Augment, blur_kernel: int, blur_sigma: float,
              image_out: np.ndarray, label_out: np.ndarray, scratch: Scratch, bgr: bool = False) -> None:
    """`normalize_chw(warp_sample(...))` written into `image_out` (3 x crop_h x crop_w, float32 or
    float16) and `label_out`: the window goes straight to its place, the padding is set in place
    (0 after normalisation is the mean exactly), and nothing is allocated at crop size.

    The arithmetic is the reference's, step for step (the same bilinear weights, float32 conversion,
    mean fill, the same blur, then (x - mean) * (1 / std) in float32), so the result is bit-identical."""
    height, width = label.shape
    plan = _plan(height, width, u, aug, bgr)
    h, w, top, left = plan.win_h, plan.win_w, plan.top, plan.left
    # OpenCV's bilinear warp has a vectorised path for 4 channels and none for 3: 1.6 against 3.6 ms per
    # 713x713 crop, for 0.4 ms to add a fourth channel to a 1080p image. Its weights and integer
    # arithmetic are the same per channel, so the first three channels are the 3-channel warp's.
    source = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA, dst=scratch.view("bgra", (height, width, 4)))
    warped = _warp_image(source, plan, scratch.view("warped", (h, w, 4)))
    outside = _outside_source(plan.inverse, height, width, (w, h)) if plan.rotate else None
    # Masked writes go through OpenCV's copyTo or numpy's copyto(where=): boolean indexing (crop[mask] =)
    # took 3 ms per rotated 713x713 crop, these 0.1-0.2 ms.
    if plan.blur:  # MSeg blurs the float crop: convert, fill, blur; without blur uint8 converts on the fly
        crop = cv2.cvtColor(warped, cv2.COLOR_BGRA2BGR, dst=scratch.view("u8", (h, w, 3)))
        converted = scratch.view("float", (h, w, 3))
        np.copyto(converted, crop)
        if outside is not None:
            converted = cv2.copyTo(scratch.fill(plan.mean, (h, w, 3)), outside.view(np.uint8), converted)
            outside = None
        crop = cv2.GaussianBlur(converted, (blur_kernel, blur_kernel), blur_sigma,
                                dst=scratch.view("blurred", (h, w, 3)))  # reflect-101 borders, as MSeg
    else:
        crop = warped
    # Channels apart first (OpenCV's split), then contiguous arithmetic: half the time of reading
    # every third value of the interleaved crop (0.5 against 0.9-1.2 ms per 713x713 crop).
    planes = cv2.split(crop, [scratch.view(f"{crop.dtype} {c}", (h, w)) for c in range(crop.shape[2])])
    window = image_out[:, top:top + h, left:left + w]
    direct = image_out.dtype == np.float32
    for channel in range(3):
        plane = window[channel] if direct else scratch.view("plane", (h, w))
        np.subtract(planes[2 - channel if bgr else channel], _MEAN[channel], out=plane, dtype=np.float32)
        plane *= _INV_STD[channel]
        if not direct:
            window[channel] = plane
    if outside is not None:  # (mean - mean) / std: the fill normalises to 0 exactly
        for channel in range(3):
            np.copyto(window[channel], 0, where=outside)
    placed = label_out[top:top + h, left:left + w]
    warped_label = _warp_label(label, plan, placed.view(label.dtype) if placed.dtype.itemsize == label.itemsize
                               else None)
    if not np.shares_memory(warped_label, placed):  # OpenCV writes in place only into an array of its own type
        placed[...] = warped_label
    for part, fill in ((image_out, 0), (label_out[None], IGNORE_LABEL)):
        part[:, :top] = fill
        part[:, top + h:] = fill
        part[:, :, :left] = fill
        part[:, :, left + w:] = fill


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
