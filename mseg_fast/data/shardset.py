"""A dataset's shards as the loaders see them: files, components, counts, random access."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mseg_fast.errors import UserError
from mseg_fast.shards.tarwriter import read_index


@dataclass(frozen=True)
class ShardSet:
    """One (taxonomy, dataset, split) written by tools/shard.py.

    Attributes:
        dataset, split: names.
        tars, indexes: shard and DALI index paths, in manifest order.
        image_ext, label_ext, meta_ext: component extensions (image may be "jpg;png").
        samples: sample count (from the manifest).
        class_names: the taxonomy's classes; label_dtype: "uint8" or "uint16".
    """

    dataset: str
    split: str
    tars: tuple[str, ...]
    indexes: tuple[str, ...]
    image_ext: str
    label_ext: str
    meta_ext: str
    samples: int
    class_names: tuple[str, ...]
    label_dtype: str
    taxonomy_sha256: str

    @classmethod
    def open(cls, root: str | Path, taxonomy: str, dataset: str, split: str) -> "ShardSet":
        directory = Path(root) / taxonomy / dataset
        path = directory / "manifest.json"
        if not path.exists():
            raise UserError(f"no shards at {directory} (no manifest.json): write them with "
                            f"`python tools/shard.py --dataset {dataset} --taxonomy {taxonomy} --split {split} "
                            f"--out {root} ...`, or set `shards=` to the folder that holds <taxonomy>/<dataset>/")
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if split not in manifest["splits"]:
            raise UserError(f"{path} has no split '{split}' (it has {', '.join(manifest['splits'])}); shard it with "
                            f"--split {split}")
        entry = manifest["splits"][split]
        components = entry["components"]
        return cls(dataset, split, tuple(str(directory / s["file"]) for s in entry["shards"]),
                   tuple(str(directory / s["index"]) for s in entry["shards"]), components["image"],
                   components["label"], components["meta"], entry["samples"], tuple(manifest["class_names"]),
                   manifest["label_dtype"], manifest["taxonomy_sha256"])

    def check_ranks(self, num_shards: int) -> None:
        """Every rank must own at least one shard file."""
        if len(self.tars) < num_shards:
            per_shard = max(1, self.samples // num_shards)
            raise UserError(
                f"{self.dataset}/{self.split} has {len(self.tars)} shard files for {num_shards} ranks reading it; "
                f"every rank needs at least one. Re-shard with --samples-per-shard {per_shard} (or smaller), "
                f"or use fewer ranks.")

    def sample_table(self) -> list[tuple[str, dict[str, tuple[int, int]]]]:
        """Random access for the torch backend: per sample, its tar and {ext: (offset, size)}."""
        table = []
        for tar, index in zip(self.tars, self.indexes):
            for components in read_index(Path(index)):
                table.append((tar, {ext: (offset, size) for ext, offset, size, _ in components}))
        if len(table) != self.samples:
            raise UserError(f"{self.dataset}/{self.split}: the index files list {len(table)} samples, the manifest "
                            f"{self.samples}; run tools/shard.py --verify")
        return table
