"""Image probing and label codecs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mseg_fast.errors import SampleError
from mseg_fast.shards import codecs


def test_label_png_is_lossless_8_and_16_bit():
    rng = np.random.default_rng(0)
    for dtype, high in ((np.uint8, 256), (np.uint16, 316)):
        label = rng.integers(0, high, size=(37, 53)).astype(dtype)
        decoded = codecs.read_label_png(codecs.encode_label(label))
        assert decoded.dtype == dtype and np.array_equal(decoded, label)


def jpeg_bytes(width: int, height: int, orientation: int | None = None) -> bytes:
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (height, width, 3), np.uint8))
    out = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


def test_probe_reports_oriented_size():
    assert codecs.probe_image(jpeg_bytes(64, 32), "a.jpg") == codecs.ImageInfo("jpg", 32, 64)
    # EXIF orientation 6 (rotated 90 degrees): OpenCV and DALI deliver a 64x32 (HxW) image.
    assert codecs.probe_image(jpeg_bytes(64, 32, orientation=6), "b.jpg") == codecs.ImageInfo("jpg", 64, 32)


def test_probe_rejects_unsupported_format():
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="BMP")
    with pytest.raises(SampleError, match="image format BMP is not supported"):
        codecs.probe_image(out.getvalue(), "a.bmp")


def test_decode_label_rejects_palette_png():
    out = io.BytesIO()
    Image.new("P", (8, 8)).save(out, format="PNG")
    with pytest.raises(SampleError, match="-bit palette PNG"):
        codecs.decode_label(out.getvalue(), "p.png")
    out = io.BytesIO()
    Image.new("1", (8, 8)).save(out, format="PNG")
    with pytest.raises(SampleError, match="1-bit greyscale PNG"):
        codecs.decode_label(out.getvalue(), "b.png")


def test_short_side_size_truncates_like_mseg():
    assert codecs.short_side_size(1080, 1920, 720) == (720, 1280)
    assert codecs.short_side_size(512, 683, 480) == (480, 640)  # 683 * 480 / 512 = 640.3 -> 640
    assert codecs.short_side_size(1000, 700, 480) == (685, 480)
