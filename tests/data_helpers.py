"""Helpers for data-path tests: encode arrays, run the DALI processing graph from memory."""

from __future__ import annotations

import cv2
import numpy as np

from mseg_fast.data.geometry import Augment


def png(array: np.ndarray) -> np.ndarray:
    """Lossless bytes (RGB arrays are given as RGB)."""
    if array.ndim == 3:
        array = array[:, :, ::-1]
    return np.frombuffer(cv2.imencode(".png", array)[1].tobytes(), np.uint8)


def jpeg(array_rgb: np.ndarray) -> np.ndarray:
    return np.frombuffer(cv2.imencode(".jpg", array_rgb[:, :, ::-1], (cv2.IMWRITE_JPEG_QUALITY, 95))[1].tobytes(), np.uint8)


def run_dali_train_graph(images: list[np.ndarray], labels: list[np.ndarray], aug: Augment, seed: int = 0,
                         label_dtype: str = "uint8", window_decode: bool = True
                         ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The training processing graph on encoded bytes from memory, on the CPU."""
    from mseg_fast.loader import run_graph_on_arrays

    crops, crop_labels, _ = run_graph_on_arrays(images, labels, aug, 5, 1.1, "cpu", label_dtype, seed, window_decode)
    return crops, crop_labels
