"""Both loader backends: mixing, rank partitioning, exact resume, validation coverage, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mseg_fast.config import load_config
from mseg_fast.errors import UserError
from mseg_fast.loader import build_train_loader, build_val_batches
from mseg_fast.dali.pipes import build_train_pipe
from mseg_fast.loader import build_spec

DATASETS = "[demo-streets,demo-rooms,demo-fields]"
BACKENDS = ["dali", "torch"]


def config(shards, *overrides):
    return load_config(None, [f"dataset={DATASETS}", f"shards={shards}", "short_size=180", "train_h=97", "train_w=113",
                              "batch_size=8", "workers=1", *overrides])


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixing_gives_configured_counts(demo_shards, backend):
    cfg = config(demo_shards, f"loader={backend}", "dataset_weights=[2,1,1]")
    loader = build_train_loader(cfg)
    for _ in range(3):
        batch = next(loader)
        assert batch.images.shape == (8, 3, 97, 113) and batch.images.dtype == torch.float32
        assert batch.labels.shape == (8, 97, 113)
        # Both loaders hand labels over in the shards' width; Batch.to() widens them after the copy.
        assert batch.labels.dtype == torch.uint8
        assert batch.to("cpu").labels.dtype == torch.int64
        assert torch.equal(batch.to("cpu").labels, batch.labels.long())
        assert batch.dataset_ids.tolist() == [0, 0, 0, 0, 1, 1, 2, 2]
        # demo-rooms shares no class with demo-fields: ids must come from the dataset they claim.
        rooms = set(batch.labels[batch.dataset_ids == 1].unique().tolist()) - {255}
        assert rooms <= {5, 10, 11, 12, 13, 14, 15}  # person, floor, wall, ceiling, table, chair_other, window
    loader.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_continues_the_same_sequence(demo_shards, backend):
    cfg = config(demo_shards, f"loader={backend}")
    loader = build_train_loader(cfg)
    for _ in range(3):
        next(loader)
    state = loader.state_dict()
    expected = [next(loader) for _ in range(3)]
    resumed = build_train_loader(cfg, state=state)
    for want, got in zip(expected, (next(resumed) for _ in range(3))):
        assert torch.equal(want.images, got.images) and torch.equal(want.labels, got.labels)
    assert resumed.state_dict()["iteration"] == 6
    fresh = next(build_train_loader(cfg))
    assert not torch.equal(fresh.images, expected[0].images), "a resumed run does not start over"


def test_two_ranks_read_disjoint_samples_dali(demo_shards):
    """DALI assigns shards to ranks with shard_id/num_shards: within an epoch no sample is read twice."""
    cfg = config(demo_shards, "dataset=[demo-streets]", "batch_size=4")
    seen = []
    for rank in (0, 1):
        spec = build_spec(cfg, rank, 2)
        pipe = build_train_pipe(spec.shardsets[0], 2, rank, 2, spec.aug, 5, 1.1, "cpu", "float32", rank, 1, 1,
                                with_meta=True)
        pipe.build()
        names = []
        for _ in range(6):  # 12 of the rank's 12 samples
            _, _, meta, _ = pipe.run()
            names += [bytes(meta.at(i)).decode() for i in range(2)]
        assert len(set(names)) == 12
        seen.append(set(names))
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 24


def test_two_ranks_read_disjoint_samples_torch(demo_shards):
    from mseg_fast.data.torch_loader import train_index

    cfg = config(demo_shards, "dataset=[demo-streets]", "batch_size=4")
    picked = []
    for rank in (0, 1):
        spec = build_spec(cfg, rank, 2)
        stream, samples = spec.streams[0], spec.shardsets[0].samples
        picked.append([train_index(cfg.manual_seed, stream, samples, k) for k in range(samples // 2)])
    assert not set(picked[0]) & set(picked[1]) and len(set(picked[0]) | set(picked[1])) == 24


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("val_crop", ["center", "whole"])
def test_validation_reads_each_sample_once(demo_shards, backend, val_crop):
    cfg = config(demo_shards, f"loader={backend}", f"val_crop={val_crop}", "batch_size=2")
    counts = {0: 0, 1: 0, 2: 0}
    for rank in (0, 1):
        for batch in build_val_batches(cfg, rank, 2, batch_size=4):
            for dataset_id in batch.dataset_ids.tolist():
                counts[dataset_id] += 1
            if val_crop == "center":
                assert batch.images.shape[2:] == (97, 113)
            else:
                assert batch.images.shape[2] == 180  # the short side, whole image
    assert counts == {0: 8, 1: 6, 2: 6}  # the manifests' val sample counts


@pytest.mark.parametrize("backend", BACKENDS)
def test_fewer_shards_than_ranks_is_an_error(demo_shards, backend):
    cfg = config(demo_shards, f"loader={backend}", "dataset=[demo-fields]", "batch_size=8")
    with pytest.raises(UserError, match=r"4 shard files for 8 ranks.*--samples-per-shard 2"):
        build_train_loader(cfg, rank=0, world_size=8)


def test_missing_dali_names_the_install_command(demo_shards):
    code = ("import sys; sys.modules['nvidia.dali'] = None\n"
            "from mseg_fast.config import load_config; from mseg_fast.loader import build_train_loader\n"
            "from mseg_fast.errors import UserError\n"
            f"cfg = load_config(None, ['dataset=[demo-fields]', 'shards={demo_shards}', 'loader=dali'])\n"
            "try:\n    build_train_loader(cfg)\nexcept UserError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "pip install nvidia-dali-cuda120" in out and "loader=torch" in out


def test_missing_shards_name_the_command(tmp_path):
    cfg = load_config(None, ["dataset=[mapillary-public65-relabeled]", f"shards={tmp_path}", "loader=torch"])
    with pytest.raises(UserError, match="python tools/shard.py --dataset mapillary-public65-relabeled"):
        build_train_loader(cfg)


@pytest.mark.parametrize("workers", [0, 2])
def test_kept_batches_are_never_overwritten(demo_shards, workers):
    """The fallback reuses shared-memory slots only when nothing references them: batches (and views of
    them) that the caller keeps stay as they were, and dropped batches' slots are used again."""
    settings = config(demo_shards, f"workers={workers}", "loader=torch")
    loader = build_train_loader(settings)
    kept = [next(loader) for _ in range(3)]
    view = kept[1].images[0, 1]
    copies = [batch.images.clone() for batch in kept]
    view_copy = view.clone()
    for _ in range(12):  # dropped right away: their slots come round again
        next(loader)
    assert all(torch.equal(batch.images, copy) for batch, copy in zip(kept, copies))
    del kept
    assert torch.equal(view, view_copy)
    fresh = build_train_loader(settings)
    expected = [fresh.__next__().images for _ in range(2)]
    fresh.close()
    assert torch.equal(view, expected[1][0, 1])
    pool = len(loader._pool.slots)
    loader.close()
    assert pool <= 3 + 2 * max(workers, 1) + 3, f"{pool} slots: dropped batches' slots are not reused"
