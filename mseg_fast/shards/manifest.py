"""`manifest.json`: what a shard directory holds, and checking the shards against it.

One manifest per `<taxonomy>/<dataset>/` directory. Fields shared by all splits sit at the
top (tool version, dataset, taxonomy, class names, TSV hash); each split has an entry under
`splits` (list hash, components, samples, shards with checksums, image sizes, per-class
pixel counts, skipped samples). It holds no timestamps or timings, so an interrupted and
resumed run ends with the same manifest as an uninterrupted one.
"""

from __future__ import annotations

import fcntl
import json
import tarfile
from contextlib import contextmanager
from pathlib import Path

from mseg_fast.atomic import write_atomic
from mseg_fast.digest import file_sha256
from mseg_fast.errors import UserError
from mseg_fast.shards.convert import source_identity
from mseg_fast.shards.tarwriter import read_index

MANIFEST = "manifest.json"
FORMAT = "mseg-fast-shards"
FORMAT_VERSION = 1


def read_manifest(directory: Path) -> dict | None:
    path = Path(directory) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error}); delete it and shard again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise UserError(f"{path} is not an mseg-fast shard manifest (format {found!r}); delete it and shard again")
    return manifest


@contextmanager
def _locked(directory: Path):
    """Serialise manifest updates (train and val may be sharded at the same time)."""
    with open(Path(directory) / ".manifest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def update_split(directory: Path, common: dict, split: str, entry: dict | None) -> list[str]:
    """Write (or, with entry None, remove) one split's entry, atomically.

    Returns:
        Splits dropped because they were sharded with other common settings (e.g. another TSV).
    """
    with _locked(directory):
        manifest = read_manifest(directory)
        dropped: list[str] = []
        if manifest is None or {k: manifest.get(k) for k in common} != common:
            dropped = sorted(set((manifest or {}).get("splits", {})) - {split})
            manifest = {**common, "splits": {}}
        splits = dict(manifest["splits"])
        if entry is None:
            splits.pop(split, None)
        else:
            splits[split] = entry
        manifest["splits"] = dict(sorted(splits.items()))
        path = Path(directory) / MANIFEST
        if not manifest["splits"]:
            path.unlink(missing_ok=True)
        else:
            write_atomic(path, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
        return dropped


def _tar_index(path: Path) -> list[list[tuple[str, int, int, str]]]:
    """The DALI index a tar should have, recomputed by reading its headers."""
    samples: list[list[tuple[str, int, int, str]]] = []
    last_key = None
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, ext = member.name.split(".", 1)
            if key != last_key:
                samples.append([])
                last_key = key
            samples[-1].append((ext, member.offset_data, member.size, member.name))
    return samples


def changed_sources(tar_path: Path, index: list, data_dir: Path) -> list[str]:
    """The source files of a shard's samples that differ now (size or modification time) from when the
    shard was written, one line each."""
    problems = []
    with open(tar_path, "rb") as handle:
        for components in index:
            for ext, offset, size, _ in components:
                if ext != "json":
                    continue
                handle.seek(offset)
                meta = json.loads(handle.read(size))
                for role, recorded in meta.get("sources", {}).items():
                    if role in meta and recorded != source_identity(data_dir, meta[role]):
                        problems.append(f"{tar_path}: {data_dir / meta[role]} changed since it was sharded (line "
                                        f"{meta.get('line')}); rerun the shard command to rewrite the shard")
    return problems


def verify_split(directory: Path, split: str, data_dir: Path | None = None) -> list[str]:
    """Re-check every shard of a split against the manifest, and with `data_dir` against its sources.

    Returns:
        Problems found, one line each (empty when all shards match).
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None or split not in manifest.get("splits", {}):
        return [f"{directory / MANIFEST}: no manifest entry for split '{split}'"]
    entry = manifest["splits"][split]
    problems = []
    total = 0
    for shard in entry["shards"]:
        tar_path, idx_path = directory / shard["file"], directory / shard["index"]
        if not tar_path.exists():
            problems.append(f"{tar_path}: missing")
            continue
        digest = file_sha256(tar_path)
        if digest != shard["sha256"]:
            problems.append(f"{tar_path}: sha256 {digest[:12]}... differs from the manifest's {shard['sha256'][:12]}...")
            continue
        try:
            index = read_index(idx_path)
        except (OSError, ValueError, IndexError) as error:
            problems.append(f"{idx_path}: unreadable DALI index ({error})")
            continue
        if index != _tar_index(tar_path):
            problems.append(f"{idx_path}: does not match the offsets in {tar_path.name}")
        if len(index) != shard["samples"]:
            problems.append(f"{tar_path}: {len(index)} samples, the manifest says {shard['samples']}")
        if data_dir is not None:
            problems += changed_sources(tar_path, index, Path(data_dir))
        total += len(index)
    if not problems and total != entry["samples"]:
        problems.append(f"{directory}: shards hold {total} samples, the manifest says {entry['samples']}")
    return problems
