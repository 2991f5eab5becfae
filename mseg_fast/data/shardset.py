"""A dataset's shards as the loaders see them: files, components, counts, random access."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mseg_fast.digest import file_sha256
from mseg_fast.errors import UserError
from mseg_fast.shards.manifest import read_manifest
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
    sizes: tuple[int, ...] = ()  # bytes of each tar, from the manifest
    sha256s: tuple[str, ...] = ()
    relabeled_ext: str | None = None  # each val image's relabeled label, when sharded --with-relabeled
    short_size: int | None = None  # images (and labels) were stored resized to this short side

    @classmethod
    def open(cls, root: str | Path, taxonomy: str, dataset: str, split: str) -> "ShardSet":
        directory = Path(root) / taxonomy / dataset
        path = directory / "manifest.json"
        manifest = read_manifest(directory)
        if manifest is None:
            raise UserError(f"no shards at {directory} (no manifest.json): write them with "
                            f"`python tools/shard.py --dataset {dataset} --taxonomy {taxonomy} --split {split} "
                            f"--out {root} ...`, or set `shards=` to the folder that holds <taxonomy>/<dataset>/")
        if split not in manifest.get("splits", {}):
            present = ", ".join(manifest.get("splits", {})) or "none"
            raise UserError(f"{path} has no split '{split}' (it has {present}); shard it with --split {split}")
        entry = manifest["splits"][split]
        if not entry.get("samples"):
            raise UserError(f"{path}: split '{split}' holds no samples (its list was empty, or --skip-bad left every "
                            f"sample out); shard a list with samples, or leave {dataset} out")
        components = entry["components"]
        shardset = cls(dataset, split, tuple(str(directory / s["file"]) for s in entry["shards"]),
                       tuple(str(directory / s["index"]) for s in entry["shards"]), components["image"],
                       components["label"], components["meta"], entry["samples"], tuple(manifest["class_names"]),
                       manifest["label_dtype"], manifest["taxonomy_sha256"],
                       tuple(s["bytes"] for s in entry["shards"]), tuple(s["sha256"] for s in entry["shards"]),
                       components.get("relabeled"), entry.get("settings", {}).get("short_size"))
        shardset.check_files()
        return shardset

    def check_files(self) -> None:
        """Cheap start-up check: every shard and index present, every shard of the size the manifest records
        (a truncated copy or a shard rewritten since fails here, not mid-run in a loader worker)."""
        verify = f"run `{self.verify_command()}`"
        for tar, index, size in zip(self.tars, self.indexes, self.sizes):
            if not Path(index).is_file():
                raise UserError(f"{index}: the DALI index of {Path(tar).name} is missing; rerun the shard command "
                                f"that wrote {Path(tar).parent} (it rewrites what is missing), or {verify}")
            try:
                actual = Path(tar).stat().st_size
            except FileNotFoundError:
                raise UserError(f"{tar}: shard missing; rerun the shard command that wrote it, or {verify}") from None
            if actual != size:
                raise UserError(f"{tar}: {actual} bytes, the manifest says {size} (truncated or replaced); rerun the "
                                f"shard command that wrote it, or {verify}")

    def verify_command(self) -> str:
        root = Path(self.tars[0]).parents[2] if self.tars else "SHARDS"
        return f"python tools/shard.py --dataset {self.dataset} --split {self.split} --verify --shards {root}"

    def damaged(self) -> list[str]:
        """The shard files whose sha256 differs from the manifest's."""
        return [tar for tar, expected in zip(self.tars, self.sha256s) if file_sha256(Path(tar)) != expected]

    def verify_checksums(self) -> None:
        """The full check (`verify_shards: True`): every shard's sha256 against the manifest."""
        damaged = self.damaged()
        if damaged:
            raise UserError(f"{damaged[0]}: its sha256 differs from the manifest's (the file is damaged); rerun the "
                            f"shard command that wrote it (it redoes damaged shards), or `{self.verify_command()}` "
                            f"to list them all")

    def check_ranks(self, num_shards: int) -> None:
        """Every rank must own at least one shard file."""
        if len(self.tars) < num_shards:
            per_shard = max(1, self.samples // num_shards)
            raise UserError(
                f"{self.dataset}/{self.split} has {len(self.tars)} shard files for {num_shards} ranks reading it; "
                f"every rank needs at least one. Re-shard with --samples-per-shard {per_shard} (or smaller), "
                f"or use fewer ranks.")

    def sample_table(self) -> list[tuple[str, str, dict[str, tuple[int, int]]]]:
        """Random access for the torch backend: per sample, its tar, its key and {ext: (offset, size)}."""
        table = []
        for tar, index in zip(self.tars, self.indexes):
            for components in read_index(Path(index)):
                key = components[0][3].split(".")[0] if components else "?"
                table.append((tar, key, {ext: (offset, size) for ext, offset, size, _ in components}))
        if len(table) != self.samples:
            raise UserError(f"{self.dataset}/{self.split}: the index files list {len(table)} samples, the manifest "
                            f"{self.samples}; run tools/shard.py --verify")
        return table
