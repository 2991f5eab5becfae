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
    from nvidia.dali import fn, pipeline_def

    from pipelines import processing

    @pipeline_def(enable_conditionals=True)
    def pipe():
        image = fn.external_source(source=lambda: images, batch=True)
        label = fn.external_source(source=lambda: labels, batch=True)
        return processing.augment_train(image, label, aug, 5, 1.1, "cpu", label_dtype, "float32", window_decode)[:2]

    built = pipe(batch_size=len(images), num_threads=1, device_id=None, seed=seed)
    built.build()
    out_images, out_labels = built.run()
    return ([np.array(out_images.at(i)) for i in range(len(images))],
            [np.array(out_labels.at(i)) for i in range(len(images))])
