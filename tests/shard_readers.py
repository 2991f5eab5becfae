"""Read shards back in the two ways users will: the webdataset library and DALI's CPU reader."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import webdataset as wds


def manifest_of(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


def shard_files(directory: Path, split: str) -> tuple[list[str], list[str]]:
    entry = manifest_of(directory)["splits"][split]
    return ([str(directory / s["file"]) for s in entry["shards"]], [str(directory / s["index"]) for s in entry["shards"]])


def read_webdataset(directory: Path, split: str) -> dict[str, dict]:
    """key -> {image ext: raw bytes, 'label': decoded array, 'meta': dict}, via the webdataset library."""
    tars, _ = shard_files(directory, split)
    samples = {}
    for sample in wds.WebDataset(tars, shardshuffle=False, empty_check=False):
        label = cv2.imdecode(np.frombuffer(sample["label.png"], np.uint8), cv2.IMREAD_UNCHANGED)
        image_ext = next(k for k in sample if k in ("jpg", "png"))
        samples[sample["__key__"]] = {"ext": image_ext, "image": sample[image_ext], "label": label,
                                      "meta": json.loads(sample["json"])}
    return samples


def read_dali(directory: Path, split: str, batch_size: int = 2) -> dict[str, dict]:
    """meta image path -> {'image': RGB array, 'label': array, 'meta'}, via fn.readers.webdataset on the CPU."""
    from nvidia.dali import fn, pipeline_def, types

    manifest = manifest_of(directory)
    entry = manifest["splits"][split]
    tars, indexes = shard_files(directory, split)
    dtype = types.UINT16 if manifest["label_dtype"] == "uint16" else types.UINT8
    components = entry["components"]

    @pipeline_def(batch_size=batch_size, num_threads=1, device_id=None)
    def pipe():
        image, label, meta = fn.readers.webdataset(
            paths=tars, index_paths=indexes, ext=[components["image"], components["label"], components["meta"]],
            missing_component_behavior="error", random_shuffle=False, pad_last_batch=True, name="reader")
        image = fn.decoders.image(image, device="cpu", output_type=types.RGB)
        label = fn.decoders.image(label, device="cpu", output_type=types.ANY_DATA, dtype=dtype)
        return image, label, meta

    pipeline = pipe()
    pipeline.build()
    total = entry["samples"]
    out: dict[str, dict] = {}
    while len(out) < total:
        images, labels, metas = pipeline.run()
        for i in range(len(images)):
            meta = json.loads(bytes(np.array(metas.at(i))).decode())
            out[meta["image"] + f"#{meta['line']}"] = {"image": np.array(images.at(i)),
                                                       "label": np.array(labels.at(i))[..., 0], "meta": meta}
    return out
