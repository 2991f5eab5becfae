"""Write one WebDataset shard (a plain tar) and its DALI index, atomically.

Tar members are written with fixed metadata (mtime 0, uid/gid 0, mode 0644, ustar
format), so the same samples give byte-identical shards: a rerun after a crash reproduces
the checksum an uninterrupted run records. The DALI index (format v1.2, what DALI's
`wds2idx` writes) is built from offsets known while writing, so no second pass over the tar
is needed. Both files are written under temporary names and renamed when complete.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from mseg_fast.atomic import fsync_and_rename, named, tmp_name, write_atomic
from mseg_fast.digest import file_sha256

INDEX_VERSION = "v1.2"
_TAR_BLOCK = 512


class ShardWriter:
    """Collects samples into `<tar>`, `<idx>`; nothing appears under the final names until `commit`.

    Args:
        tar_path: final path of the shard.
        idx_path: final path of the DALI index.
    """

    def __init__(self, tar_path: Path, idx_path: Path):
        self.tar_path, self.idx_path = Path(tar_path), Path(idx_path)
        self._tmp_tar = tmp_name(self.tar_path)
        self._file = open(self._tmp_tar, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        self._index_lines: list[str] = []

    def add(self, key: str, components: list[tuple[str, bytes]]) -> None:
        """Append one sample: its components (extension, bytes), written contiguously."""
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must contain no dots or slashes (DALI splits at the first dot)")
        fields = []
        for ext, data in components:
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            data_offset = self._tar.offset + _TAR_BLOCK  # ustar: one 512-byte header per member
            try:
                self._tar.addfile(info, io.BytesIO(data))
            except OSError as error:  # a full disk: the error line names the shard, so the disk
                raise named(error, self.tar_path) from None
            fields.append(f"{ext} {data_offset} {len(data)} {info.name}")
        self._index_lines.append(" ".join(fields))

    def commit(self) -> tuple[str, int]:
        """Finish both files and move them to their final names.

        Returns:
            The shard's sha256 and its size in bytes.
        """
        try:
            self._tar.close()
            self._file.close()
        except OSError as error:
            raise named(error, self.tar_path) from None
        index = f"{INDEX_VERSION} {len(self._index_lines)}\n" + "".join(line + "\n" for line in self._index_lines)
        write_atomic(self.idx_path, index.encode())
        fsync_and_rename(self._tmp_tar, self.tar_path)
        return file_sha256(self.tar_path), self.tar_path.stat().st_size

    def abort(self) -> None:
        """Drop the partial shard."""
        try:
            self._tar.close()
        finally:
            self._file.close()
            self._tmp_tar.unlink(missing_ok=True)


def read_index(path: Path) -> list[list[tuple[str, int, int, str]]]:
    """Parse a DALI v1.2 index: per sample, its components (ext, offset, size, name)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    version, count = lines[0].split()
    if version != INDEX_VERSION or int(count) != len(lines) - 1:
        raise ValueError(f"{path}: not a {INDEX_VERSION} index with {count} samples")
    samples = []
    for line in lines[1:]:
        parts = line.split()
        samples.append([(parts[i], int(parts[i + 1]), int(parts[i + 2]), parts[i + 3]) for i in range(0, len(parts), 4)])
    return samples
