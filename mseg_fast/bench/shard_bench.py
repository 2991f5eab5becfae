"""Sharding throughput on real 1080p photos, and the label-codec comparison behind codecs.py.

The benchmark tree is built in a temporary folder from the user's copy of
mseg-semantic-test-data (real 1920x1080 photos and real COCO label maps, scaled to each
photo with nearest-neighbour), laid out as coco-panoptic-133-relabeled in the MSeg layout.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

PHOTOS_1080P = ("demo_images/242_Maryview_Dr_Webster_0000304.jpg",
                "demo_images/PrivateLakefrontResidenceWoodstockGA_0000893.jpg")
LABEL_MAPS = ("relabeled_gt/000000025986-relabeled-gt.png", "relabeled_gt/000000025986-unrelabeled-gt.png")
DATASET = "coco-panoptic-133-relabeled"


def make_tree(test_data: Path, root: Path, samples: int) -> Path:
    """Write a COCOPanoptic/ tree of 1080p photos + labels and a list of `samples` lines.

    Returns:
        The list file's path.
    """
    images, labels = root / "COCOPanoptic/images/train2017", root / "COCOPanoptic/semantic_relabeled133/train2017"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    pairs = []
    for p, photo in enumerate(PHOTOS_1080P):
        data = (test_data / photo).read_bytes()
        height, width = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
        for m, label_map in enumerate(LABEL_MAPS):
            label = cv2.imread(str(test_data / label_map), cv2.IMREAD_UNCHANGED)
            for flip in (False, True):
                stem = f"{p}{m}{int(flip)}"
                big = cv2.resize(label[:, ::-1] if flip else label, (width, height), interpolation=cv2.INTER_NEAREST)
                (images / f"{stem}.jpg").write_bytes(data)
                cv2.imwrite(str(labels / f"{stem}.png"), big)  # OpenCV's default PNG settings, as a dataset's own
                pairs.append(f"images/train2017/{stem}.jpg semantic_relabeled133/train2017/{stem}.png")
    list_path = root / "train.txt"
    list_path.write_text("\n".join(pairs[i % len(pairs)] for i in range(samples)) + "\n")
    return list_path


def _ms(function: Callable[[], object], repeat: int) -> float:
    function()
    start = time.perf_counter()
    for _ in range(repeat):
        function()
    return 1e3 * (time.perf_counter() - start) / repeat


def _pil_encode(label: np.ndarray, level: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(label).save(out, format="PNG", compress_level=level)
    return out.getvalue()


def codec_table(test_data: Path, repeat: int = 20) -> list[dict]:
    """ms per 1080p label for decode and encode, Pillow vs OpenCV, 8- and 16-bit."""
    cv2.setNumThreads(1)
    label8 = cv2.imread(str(test_data / LABEL_MAPS[0]), cv2.IMREAD_UNCHANGED)
    label8 = cv2.resize(label8, (1920, 1080), interpolation=cv2.INTER_NEAREST)
    label16 = label8.astype(np.uint16) + np.where(label8 == 255, 0, 200).astype(np.uint16)  # ids like naive's
    up = [cv2.IMWRITE_PNG_COMPRESSION, 3, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    variants = {
        "opencv default": lambda a: cv2.imencode(".png", a)[1].tobytes(),
        "opencv level 3 + filter UP (chosen)": lambda a: cv2.imencode(".png", a, up)[1].tobytes(),
        "pillow level 1": lambda a: _pil_encode(a, 1),
        "pillow default (6)": lambda a: _pil_encode(a, 6),
    }
    rows = []
    for bits, label in (("8", label8), ("16", label16)):
        for name, encode in variants.items():
            data = encode(label)
            decoded_cv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(decoded_cv, label), name
            rows.append({
                "bits": bits, "encoder": name, "bytes": len(data),
                "encode_ms": _ms(lambda: encode(label), repeat),
                "decode_opencv_ms": _ms(lambda: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), repeat),
                "decode_pillow_ms": _ms(lambda: np.asarray(Image.open(io.BytesIO(data))), repeat),
            })
    return rows


def image_check_table(test_data: Path, repeat: int = 20) -> list[dict]:
    """ms per 1080p JPEG: full decode vs the 1/8-scale check that sharding uses."""
    data = (test_data / PHOTOS_1080P[0]).read_bytes()

    def draft() -> None:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (image.width // 8, image.height // 8))
        image.load()

    return [
        {"method": "opencv full decode", "ms": _ms(lambda: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), repeat)},
        {"method": "pillow full decode", "ms": _ms(lambda: Image.open(io.BytesIO(data)).convert("RGB"), repeat)},
        {"method": "pillow 1/8-scale decode (chosen)", "ms": _ms(draft, repeat)},
    ]
