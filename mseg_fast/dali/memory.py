"""The training graph fed from memory (encoded bytes), for differential checks between devices and
backends: no reader, so the same samples and the same draws go through every variant."""

from __future__ import annotations

import numpy as np

from mseg_fast.data.geometry import Augment
from mseg_fast.dali import processing
from mseg_fast.dali.codegen import private_codegen_dir


def run_train_graph(images: list[np.ndarray], labels: list[np.ndarray], aug: Augment, blur_kernel: int,
                    blur_sigma: float, device: str, device_id: int | None, label_dtype: str, seed: int,
                    window_decode: bool = True) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """One batch through the training graph on `device` ("cpu" or "gpu").

    Returns:
        The crops (CHW float), their labels (HW) and each sample's uniforms, as host arrays.
    """
    from nvidia.dali import fn, pipeline_def

    @pipeline_def(enable_conditionals=True)
    def pipe():
        image = fn.external_source(source=lambda: images, batch=True)
        label = fn.external_source(source=lambda: labels, batch=True)
        return processing.augment_train(image, label, aug, blur_kernel, blur_sigma, device, label_dtype, "float32",
                                        window_decode)

    with private_codegen_dir():
        built = pipe(batch_size=len(images), num_threads=1, device_id=device_id if device == "gpu" else None,
                     seed=seed)
        built.build()
    outputs = [o.as_cpu() if device == "gpu" else o for o in built.run()]
    return tuple([np.array(o.at(i)) for i in range(len(images))] for o in outputs)
