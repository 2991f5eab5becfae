"""The DALI processing graph: decode, one fused warp, blur, pad, normalise. No reader here,
so the same graph can be fed from memory in tests (STYLE habit 4).

The device is a parameter. "gpu": JPEG decode on the `mixed` backend (the hardware decoder
where there is one) and GPU operators. "cpu": the same operators on the CPU, `device_id=None`.
Label PNGs decode on the CPU in both cases (DALI has no GPU PNG decoder) and move to the GPU
before the warp. Geometry comes from mseg_fast.data.geometry, the code the torch fallback uses.
"""

from __future__ import annotations

import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types

from mseg_fast.constants import IGNORE_LABEL, IMAGENET_MEAN, IMAGENET_STD
from mseg_fast.data.geometry import NUM_DRAWS, Augment, blur_drawn, crop_map, resized_size, source_box


class DaliMath:
    """geometry's math namespace, for DALI DataNodes (per-sample scalars on the CPU)."""

    floor = staticmethod(dmath.floor)
    sin = staticmethod(dmath.sin)
    cos = staticmethod(dmath.cos)
    minimum = staticmethod(dmath.min)
    maximum = staticmethod(dmath.max)

    @staticmethod
    def less(a, b):
        return fn.cast(a < b, dtype=types.FLOAT)


def decode_label(labels, device: str, label_dtype: str):
    """PNG bytes -> label HW1 (uint8, or int16 for 16-bit labels), decoded on the CPU (DALI has no GPU
    PNG decoder), then moved to `device`.

    Why int16: DALI 2.4's warp_affine has no uint16 kernel (every rotated naive-taxonomy sample failed)
    and its torch hand-over no uint16 type; naive ids (at most 315) and 255 fit in int16, which warp,
    resize, slice and the hand-over all support.
    """
    if label_dtype == "uint16":
        label = fn.cast(fn.decoders.image(labels, device="cpu", output_type=types.ANY_DATA, dtype=types.UINT16),
                        dtype=types.INT16)
    else:
        label = fn.decoders.image(labels, device="cpu", output_type=types.ANY_DATA, dtype=types.UINT8)
    return label.gpu() if device == "gpu" else label


def decode(images, labels, device: str, label_dtype: str):
    """Encoded bytes -> image HWC uint8 RGB, label HW1 (on `device`), and the image size (H, W) floats."""
    shape = fn.cast(fn.peek_image_shape(images), dtype=types.FLOAT)
    image = fn.decoders.image(images, device="mixed" if device == "gpu" else "cpu", output_type=types.RGB)
    return image, decode_label(labels, device, label_dtype), shape[0], shape[1]


def centre(image):
    """uint8 -> float with the ImageNet mean subtracted, on the full image.

    Why: DALI's warp fills with one value for all channels; in mean-centred space that value is
    0 for every channel, which is MSeg's per-channel mean fill. The blur is linear, so blurring
    centred pixels is blurring the pixels, shifted.
    """
    return fn.crop_mirror_normalize(image, mean=list(IMAGENET_MEAN), std=[1.0, 1.0, 1.0], dtype=types.FLOAT,
                                    output_layout="HWC")


def decode_window(images, labels, device: str, label_dtype: str, u, aug: Augment, window: bool = True):
    """The part of the image that the sample's window reads (labels whole).

    Why: for MSeg's scales above ~0.7 the 713 crop reads a fraction of a 1080p photo, and a
    partial decode (libjpeg-turbo on the CPU, nvJPEG on the GPU) skips IDCT and colour conversion
    of the rest and stops after the last needed row. The box has a margin, so the crop is the same
    as from the whole image (tests/test_augment.py). With `window` False the whole image is decoded
    and the same box sliced out of it, the same pixels by another way: nvImageCodec's ROI decode is
    reported to fail on some GPUs (loader.window_decode), and the GPU check measures both.

    Returns:
        image (the box), label (whole), the box's origin (y0, x0) in the source, and crop_map's
        (inverse, window, rotate) for the source.
    """
    shape = fn.cast(fn.peek_image_shape(images), dtype=types.FLOAT)
    height, width = shape[0], shape[1]
    inverse, window, rotate = crop_map(height, width, u, aug, DaliMath)
    y0, x0, y1, x1 = source_box(inverse, window, height, width, DaliMath)
    start, end = (fn.cast(fn.stack(*p), dtype=types.INT32) for p in ((y0, x0), (y1, x1)))
    backend = "mixed" if device == "gpu" else "cpu"
    if window:
        image = fn.decoders.image_slice(images, start=start, end=end, axis_names="HW", device=backend,
                                        output_type=types.RGB)
    else:
        image = fn.slice(fn.decoders.image(images, device=backend, output_type=types.RGB), start=start, end=end,
                         axis_names="HW")
    return image, decode_label(labels, device, label_dtype), (y0, x0), (inverse, window, rotate)


def place(image, label, mapping: tuple, origin: tuple | None = None):
    """The visible window of the crop, taken straight from the source (centred float image, label).

    `mapping` is crop_map's output for the source; `origin` (y0, x0) is where `image` starts in
    the source when only a box of it was decoded (the label is always whole).

    Rotated samples go through warp_affine. The others (half of MSeg's samples) need only
    scale, flip and crop, an axis-aligned map, which is a resize of a region of interest (a
    reversed ROI flips): measured on 1080p photos and 713 crops, DALI's CPU resize is several
    times faster than its CPU warp, and both resample exactly the same way (bilinear, no
    antialiasing; nearest for labels).
    """
    inverse, (win_h, win_w, top, left), rotate = mapping
    a, b, c, d, e, f = (fn.cast(v, dtype=types.FLOAT) for v in inverse)
    oy, ox = (fn.cast(v, dtype=types.FLOAT) for v in origin) if origin is not None else (None, None)
    size = fn.cast(fn.stack(win_h, win_w), dtype=types.FLOAT)
    if rotate > 0.5:
        label = fn.warp_affine(label, matrix=fn.reshape(fn.stack(a, b, c, d, e, f), shape=[2, 3]), size=size,
                               fill_value=float(IGNORE_LABEL), interp_type=types.INTERP_NN)
        if origin is not None:  # the decoded box starts at (x0, y0) of the source
            c, f = c - ox, f - oy
        matrix = fn.reshape(fn.stack(a, b, c, d, e, f), shape=[2, 3])
        image = fn.warp_affine(centre(image), matrix=matrix, size=size, fill_value=0.0, interp_type=types.INTERP_LINEAR)
    else:
        # Window corners in source coordinates: x = a*x' + c, y = e*y' + f (b = d = 0 unrotated).
        roi_start = fn.stack(f, c)
        roi_end = fn.stack(e * fn.cast(win_h, dtype=types.FLOAT) + f, a * fn.cast(win_w, dtype=types.FLOAT) + c)
        label = fn.resize(label, size=size, roi_start=roi_start, roi_end=roi_end, roi_relative=False,
                          interp_type=types.INTERP_NN, antialias=False)
        if origin is not None:
            shift = fn.stack(oy, ox)
            roi_start, roi_end = roi_start - shift, roi_end - shift
        image = centre(fn.resize(image, size=size, roi_start=roi_start, roi_end=roi_end,
                                 roi_relative=False, interp_type=types.INTERP_LINEAR, antialias=False,
                                 dtype=types.FLOAT))
    return image, label, fn.cast(fn.stack(-top, -left), dtype=types.INT32)


def pad(image, label, anchor, crop_h: int, crop_w: int):
    """Place a window at `-anchor` inside a crop_h x crop_w canvas of fill.

    `start` and `shape` go as named arguments, which DALI keeps on the host: as positional inputs a Python
    list becomes a constant on the operator's device, copied back to the host (a synchronisation) for every
    pipeline run on a GPU."""
    image = fn.slice(image, start=anchor, shape=[crop_h, crop_w], axes=[0, 1], out_of_bounds_policy="pad",
                     fill_values=0.0)
    label = fn.slice(label, start=anchor, shape=[crop_h, crop_w], axes=[0, 1], out_of_bounds_policy="pad",
                     fill_values=float(IGNORE_LABEL))
    return image, label


def finish(image, label, output_dtype: str):
    """Centred float HWC -> normalised CHW in the output dtype; label HW1 -> HW."""
    image = fn.crop_mirror_normalize(image, mean=[0.0, 0.0, 0.0], std=list(IMAGENET_STD), output_layout="CHW",
                                     dtype=types.FLOAT16 if output_dtype == "float16" else types.FLOAT)
    return image, fn.squeeze(label, axes=[2])


def augment_train(images, labels, aug: Augment, blur_kernel: int, blur_sigma: float, device: str, label_dtype: str,
                  output_dtype: str, window_decode: bool = True):
    """The training graph (MSeg's augmentation, one resampling). Needs enable_conditionals.

    Returns:
        image (CHW), label (HW), and the sample's uniforms (for show_batch).
    """
    u = fn.random.uniform(range=[0.0, 1.0], shape=[NUM_DRAWS])
    image, label, origin, mapping = decode_window(images, labels, device, label_dtype, u, aug, window_decode)
    image, label, anchor = place(image, label, mapping, origin)
    if blur_drawn(u, aug, DaliMath) > 0.5:
        image = fn.gaussian_blur(image, window_size=blur_kernel, sigma=blur_sigma)  # reflect-101 borders
    image, label = pad(image, label, anchor, aug.crop_h, aug.crop_w)
    return (*finish(image, label, output_dtype), u)


def augment_val(images, labels, aug: Augment, whole: bool, device: str, label_dtype: str, output_dtype: str):
    """Validation: resize the short side, then the centre crop (padded) or the whole image."""
    image, label, height, width = decode(images, labels, device, label_dtype)
    if whole:
        new_h, new_w = resized_size(height, width, aug.short_size, DaliMath)
        size = fn.stack(new_h, new_w)
        image = centre(fn.resize(image, size=size, interp_type=types.INTERP_LINEAR, antialias=False, dtype=types.FLOAT))
        label = fn.resize(label, size=size, interp_type=types.INTERP_NN, antialias=False)
        return finish(image, label, output_dtype)
    # A validation Augment has zero ranges and probabilities: u is multiplied by 0 or compared
    # against 0, so any values in [0, 1) give the same centre crop.
    u = fn.random.uniform(range=[0.0, 1.0], shape=[NUM_DRAWS], seed=0)
    image, label, anchor = place(image, label, crop_map(height, width, u, aug, DaliMath))
    image, label = pad(image, label, anchor, aug.crop_h, aug.crop_w)
    return finish(image, label, output_dtype)
