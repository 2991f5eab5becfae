"""Image and label codecs used when writing shards.

Choices, measured with `tools/bench_shard.py --codecs` (numbers in docs/speed.md):
- Labels decode with OpenCV (faster than Pillow on 8- and 16-bit greyscale PNG).
- Labels encode with OpenCV, PNG filter UP, zlib level 3. Label maps are flat regions whose
  rows repeat, so UP compresses them as well as adaptive filtering, and decodes 2-3x faster
  than the default (adaptive/Paeth), which matters because training decodes every label.
- Images are passed through untouched. They are checked without a full decode: JPEG at 1/8
  scale via libjpeg's DCT scaling (catches truncation; ~2 ms for 1080p instead of ~8), PNG by
  its chunk CRCs. A full decode would make image checking the main cost of sharding.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from mseg_fast.errors import SampleError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPES = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}
_EXIF_ORIENTATION = 0x0112
# Orientations 5-8 are rotated by 90 degrees: decoders that honour EXIF (OpenCV, as MSeg
# reads images, and DALI) swap height and width.
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)
_FORMATS = {"JPEG": "jpg", "PNG": "png"}
LABEL_PNG_PARAMS = (cv2.IMWRITE_PNG_COMPRESSION, 3, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP)


@dataclass(frozen=True)
class ImageInfo:
    """What a shard needs to know about an image without decoding it fully."""

    ext: str  # component extension: jpg or png
    height: int  # after EXIF orientation, as decoders deliver it
    width: int


def probe_image(data: bytes, path: str) -> ImageInfo:
    """Identify an encoded image, check it decodes, and return its oriented size.

    Raises:
        SampleError: the bytes are not a JPEG or PNG, or are truncated or corrupt.
    """
    hint = "Re-download or re-extract this file, or pass --skip-bad to leave the sample out."
    try:
        image = Image.open(io.BytesIO(data))
        ext = _FORMATS.get(image.format or "")
        if ext is None:
            raise SampleError(path, f"image format {image.format} is not supported (JPEG or PNG only)",
                              "Convert it to JPEG or PNG, or pass --skip-bad.")
        width, height = image.size
        # JPEG only: PIL's getexif() on a PNG decodes the whole image to look for an eXIf chunk.
        if ext == "jpg" and image.getexif().get(_EXIF_ORIENTATION, 1) in _TRANSPOSED_ORIENTATIONS:
            width, height = height, width
        if ext == "jpg":
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
        else:
            Image.open(io.BytesIO(data)).verify()  # verify() must follow open() directly
    except SampleError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise SampleError(path, f"image cannot be decoded ({error})", hint) from None
    return ImageInfo(ext, height, width)


def _png_header(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR chunk, or None if not a PNG."""
    if len(data) < 26 or not data.startswith(PNG_SIGNATURE):
        return None
    return data[24], data[25]


def decode_label(data: bytes, path: str) -> np.ndarray:
    """Decode a single-channel 8- or 16-bit label map.

    Raises:
        SampleError: not a greyscale image, or undecodable.
    """
    header = _png_header(data)
    if header is None:
        # A lossy label (a JPEG saved as .png, or .jpg) decodes to ids near the true ones: wrong classes on
        # region borders, some inside the class range, which no range check catches. Only PNG is lossless here.
        kind = "a JPEG" if data[:3] == b"\xff\xd8\xff" else "not a PNG"
        raise SampleError(path, f"label is {kind}; labels must be lossless PNG (a lossy format changes class ids "
                                f"at region borders)",
                          "Regenerate the label as PNG from its source (mseg-api's scripts write PNG), or pass "
                          "--skip-bad.")
    # Greyscale of 1, 2 or 4 bits would come back rescaled (e.g. 1 -> 255), so only 8 and 16.
    if header is not None and (header[1] != 0 or header[0] not in (8, 16)):
        raise SampleError(
            path, f"label is a {header[0]}-bit {_PNG_COLOR_TYPES.get(header[1], header[1])} PNG, "
                  f"expected single-channel greyscale with class ids as values",
            "Convert colour-coded labels to class ids first (mseg-api's remap scripts do), or pass --skip-bad.",
        )
    label = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise SampleError(path, "label cannot be decoded (truncated or corrupt)",
                          "Re-download or regenerate this label, or pass --skip-bad.")
    if label.ndim != 2 or label.dtype not in (np.uint8, np.uint16):
        raise SampleError(path, f"label has shape {label.shape} and type {label.dtype}, expected a "
                                f"single-channel 8- or 16-bit map", "Pass --skip-bad to leave it out.")
    return label


def encode_label(label: np.ndarray) -> bytes:
    """Encode a label map as PNG (8-bit, or 16-bit for uint16 input); lossless."""
    ok, buffer = cv2.imencode(".png", label, LABEL_PNG_PARAMS)
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {label.dtype} label of shape {label.shape}")
    return buffer.tobytes()


def read_label_png(data: bytes) -> np.ndarray:
    """Decode a label PNG written by `encode_label` (for readers and tests)."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def short_side_size(height: int, width: int, short_size: int) -> tuple[int, int]:
    """MSeg's ResizeShort output size (reference §3.7 step 1: the long side is truncated)."""
    if height <= width:
        return short_size, int(width * short_size / height)
    return int(height * short_size / width), short_size


def resize_short(image_bytes: bytes, label: np.ndarray, short_size: int, quality: int, path: str
                 ) -> tuple[bytes, np.ndarray]:
    """Apply MSeg's ResizeShort offline: image bilinear (re-encoded JPEG), label nearest.

    Only downscales: an image whose short side is already <= short_size is kept as it is, and
    the training pipeline's own ResizeShort then does what MSeg does.
    """
    image = cv2.imdecode(np.frombuffer(image_bytes, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise SampleError(path, "image cannot be decoded", "Pass --skip-bad to leave the sample out.")
    new_h, new_w = short_side_size(image.shape[0], image.shape[1], short_size)
    # INTER_LINEAR without antialiasing, as MSeg's cv2.resize in ResizeShort.
    image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    ok, buffer = cv2.imencode(".jpg", image, (cv2.IMWRITE_JPEG_QUALITY, quality))
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode {path} as JPEG")
    return buffer.tobytes(), label
