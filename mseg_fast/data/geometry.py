"""MSeg's training geometry as one affine map, shared by both loader backends.

MSeg (reference §3.7) resizes the short side (truncating the long side), scales by s,
rotates about the scaled canvas's centre, flips, pads to the crop size (centred) and crops.
All of these are affine, so the crop can be sampled straight from the source image through
one composed map, resampling once instead of three times.

`crop_map` is written with arithmetic and the few functions of a `math` namespace only, so
the same formula runs on numpy scalars (the torch fallback) and on DALI DataNodes inside the
pipeline graph (mseg_fast/dali/). Randomness comes in as uniforms u in [0, 1) (one vector per
sample, `NUM_DRAWS` long); each backend draws them from its own seeded generator.

Coordinates are continuous: pixel (i, j) covers [j, j+1) x [i, i+1), its centre at +0.5, as
DALI's warp uses; `to_opencv` converts a map to OpenCV's integer-centre convention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# u[0] scale, u[1] rotate?, u[2] angle, u[3] flip?, u[4] crop y, u[5] crop x, u[6] blur?
NUM_DRAWS = 7
U_SCALE, U_ROTATE, U_ANGLE, U_FLIP, U_CROP_Y, U_CROP_X, U_BLUR = range(NUM_DRAWS)


@dataclass(frozen=True)
class Augment:
    """Augmentation settings (config keys of the same names; MSeg's values by default)."""

    short_size: int = 1080
    crop_h: int = 713
    crop_w: int = 713
    scale_min: float = 0.5
    scale_max: float = 2.0
    rotate_min: float = -10.0
    rotate_max: float = 10.0
    rotate_prob: float = 0.5
    flip_prob: float = 0.5
    blur_prob: float = 0.5
    random_crop: bool = True

    @classmethod
    def validation(cls, short_size: int, crop_h: int, crop_w: int) -> "Augment":
        """No randomness: resize the short side, centre crop (MSeg's val transform)."""
        return cls(short_size, crop_h, crop_w, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, False)


class NumpyMath:
    """The functions `crop_map` needs, for numpy scalars/arrays."""

    floor = staticmethod(np.floor)
    sin = staticmethod(np.sin)
    cos = staticmethod(np.cos)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)

    @staticmethod
    def less(a, b):
        return np.less(a, b).astype(np.float64)


def resized_size(height, width, short_size: int, m=NumpyMath):
    """MSeg's ResizeShort output size: short side = short_size, long side truncated."""
    portrait = m.less(width, height)  # 1 where height > width
    new_h = (1 - portrait) * short_size + portrait * m.floor(height * short_size / width)
    new_w = (1 - portrait) * m.floor(width * short_size / height) + portrait * short_size
    return new_h, new_w


def draw(height, width, u, aug: Augment, m=NumpyMath) -> dict[str, Any]:
    """MSeg's parameters of one sample from its uniforms (reference §3.7 steps 1-3, 5, 6)."""
    new_h, new_w = resized_size(height, width, aug.short_size, m)
    scale = aug.scale_min + u[U_SCALE] * (aug.scale_max - aug.scale_min)
    # Canvas after RandScale: OpenCV rounds w*s to the nearest integer.
    canvas_h, canvas_w = m.floor(new_h * scale + 0.5), m.floor(new_w * scale + 0.5)
    rotate = m.less(u[U_ROTATE], aug.rotate_prob)
    angle = rotate * (aug.rotate_min + u[U_ANGLE] * (aug.rotate_max - aug.rotate_min))
    # Crop: pad the canvas to at least the crop (centred), then an offset in [0, padded - crop].
    padded_h, padded_w = m.maximum(canvas_h, aug.crop_h), m.maximum(canvas_w, aug.crop_w)
    if aug.random_crop:
        off_y = m.minimum(m.floor(u[U_CROP_Y] * (padded_h - aug.crop_h + 1)), padded_h - aug.crop_h)
        off_x = m.minimum(m.floor(u[U_CROP_X] * (padded_w - aug.crop_w + 1)), padded_w - aug.crop_w)
    else:
        off_y, off_x = m.floor((padded_h - aug.crop_h) / 2), m.floor((padded_w - aug.crop_w) / 2)
    return {"resized_h": new_h, "resized_w": new_w, "scale": scale, "canvas_h": canvas_h, "canvas_w": canvas_w,
            "rotate": rotate, "angle": angle, "flip": m.less(u[U_FLIP], aug.flip_prob),
            "blur": m.less(u[U_BLUR], aug.blur_prob),
            "pad_top": m.floor((padded_h - canvas_h) / 2), "pad_left": m.floor((padded_w - canvas_w) / 2),
            "crop_y": off_y, "crop_x": off_x}


def crop_map(height, width, u, aug: Augment, m=NumpyMath) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Where one sample's crop comes from.

    MSeg rotates on the scaled canvas and cuts off what leaves it, then pads. So the crop is
    a window of visible canvas, warped from the source, placed in fill (mean / 255) where the
    canvas is smaller than the crop.

    Args:
        height, width: the source image size (floats, or DataNodes).
        u: NUM_DRAWS uniforms in [0, 1) (indexable).
        aug: the settings.
        m: math namespace (NumpyMath, or the DALI graph's one).

    Returns:
        (a, b, c, d, e, f): the inverse map, window pixel -> source pixel, in continuous
        coordinates: src = (a*x + b*y + c, d*x + e*y + f).
        (win_h, win_w, top, left): the window's size and its position inside the crop.
        rotate: 1 where the sample is rotated (else the map is axis-aligned: scale and flip only).
    """
    p = draw(height, width, u, aug, m)
    canvas_h, canvas_w, flip = p["canvas_h"], p["canvas_w"], p["flip"]
    # Canvas origin in crop coordinates; the visible window starts at max(origin, 0).
    shift_x, shift_y = p["pad_left"] - p["crop_x"], p["pad_top"] - p["crop_y"]
    top, left = m.maximum(shift_y, 0), m.maximum(shift_x, 0)
    win_h, win_w = m.minimum(canvas_h, aug.crop_h), m.minimum(canvas_w, aug.crop_w)
    # Undo, from the window back to the source: window offset, crop shift, flip, rotation, scale.
    kx = 1 - 2 * flip  # x -> canvas_w - x when flipped
    ex = kx * (left - shift_x) + flip * canvas_w
    ey = top - shift_y
    # OpenCV rotates about (w/2, h/2) in integer coordinates: +0.5 in continuous ones.
    cx, cy = canvas_w / 2 + 0.5, canvas_h / 2 + 0.5
    theta = p["angle"] * (np.pi / 180.0)
    cos, sin = m.cos(theta), m.sin(theta)
    sx, sy = p["resized_w"] / width * p["scale"], p["resized_h"] / height * p["scale"]
    inverse = (cos * kx / sx, -sin / sx, (cos * (ex - cx) - sin * (ey - cy) + cx) / sx,
               sin * kx / sy, cos / sy, (sin * (ex - cx) + cos * (ey - cy) + cy) / sy)
    return inverse, (win_h, win_w, top, left), p["rotate"]


def _span(values: tuple, m) -> tuple:
    """(min, max) of four values, with the namespace's elementwise functions."""
    return (m.minimum(m.minimum(values[0], values[1]), m.minimum(values[2], values[3])),
            m.maximum(m.maximum(values[0], values[1]), m.maximum(values[2], values[3])))


def source_box(inverse: tuple, window: tuple, height, width, m=NumpyMath, margin: float = 2.0) -> tuple:
    """The part of the source a window samples: rows [y0, y1) and columns [x0, x1), in whole pixels.

    The window's corners go through the inverse map; their bounding box grows by `margin` pixels
    (a bilinear sample reads the next pixel too) and is clipped to the image. Every window point
    outside the box is outside the image, so decoding only the box (DALI's decoders.image_slice:
    libjpeg-turbo or nvJPEG skip the rest) and shifting the map by (x0, y0) gives the same crop.
    """
    a, b, c, d, e, f = inverse
    win_h, win_w = window[0], window[1]
    xs = (c, a * win_w + c, b * win_h + c, a * win_w + b * win_h + c)
    ys = (f, d * win_w + f, e * win_h + f, d * win_w + e * win_h + f)
    x_lo, x_hi = _span(xs, m)
    y_lo, y_hi = _span(ys, m)
    # Clip to the image; a window entirely outside it (possible only with large rotations) keeps one pixel.
    x0 = m.minimum(m.maximum(m.floor(x_lo) - margin, 0), width - 1)
    y0 = m.minimum(m.maximum(m.floor(y_lo) - margin, 0), height - 1)
    x1 = m.maximum(m.minimum(-m.floor(-x_hi) + margin, width), x0 + 1)
    y1 = m.maximum(m.minimum(-m.floor(-y_hi) + margin, height), y0 + 1)
    return y0, x0, y1, x1


def describe(height: int, width: int, u, aug: Augment) -> dict[str, float | int | bool]:
    """The drawn parameters as plain numbers (for samples.json)."""
    p = draw(float(height), float(width), np.asarray(u, np.float64), aug)
    flags = ("rotate", "flip", "blur")
    return {k: bool(v) if k in flags else (round(float(v), 4) if k in ("scale", "angle") else int(v))
            for k, v in p.items()}


def blur_drawn(u, aug: Augment, m=NumpyMath):
    """1 where this sample is blurred."""
    return m.less(u[U_BLUR], aug.blur_prob)


def matrix(values: tuple) -> np.ndarray:
    """Six scalars -> a 2x3 float64 array."""
    return np.array(values, dtype=np.float64).reshape(2, 3)


def to_opencv(inverse: np.ndarray) -> np.ndarray:
    """Continuous-coordinate inverse map -> OpenCV's (pixel centres at integers), for WARP_INVERSE_MAP."""
    linear, offset = inverse[:, :2], inverse[:, 2]
    return np.hstack([linear, (offset + linear @ np.array([0.5, 0.5]) - 0.5)[:, None]])
