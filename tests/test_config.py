"""One config path: YAML (MSeg sections flattened) + key=value overrides, strictly typed."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from helpers import REPO
from mseg_fast.config import Config, load_config, to_yaml
from mseg_fast.errors import UserError


def test_defaults_are_mseg_values():
    cfg = Config()
    assert (cfg.scale_min, cfg.scale_max, cfg.rotate_min, cfg.rotate_max) == (0.5, 2.0, -10.0, 10.0)
    assert (cfg.rotate_prob, cfg.flip_prob, cfg.blur_prob, cfg.blur_kernel, cfg.blur_sigma) == (0.5, 0.5, 0.5, 5, 1.1)
    assert (cfg.train_h, cfg.train_w, cfg.short_size, cfg.ignore_label) == (713, 713, 1080, 255)


def test_sections_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("DATA:\n  dataset: [bdd-relabeled]\nTRAIN:\n  scale_min: 0.5\n  train_h: 593\n")
    cfg = load_config(path, ["scale_min=0.75", "dataset=[ade20k-150-relabeled,bdd-relabeled]", "scale_max=1",
                             "dataset_weights=[1, 2]", "loader=torch"])
    assert cfg.scale_min == 0.75 and cfg.scale_max == 1.0 and cfg.train_h == 593
    assert cfg.dataset == ["ade20k-150-relabeled", "bdd-relabeled"] and cfg.dataset_weights == [1.0, 2.0]
    assert load_config(path, ["dataset=mapillary"]).dataset == ["mapillary"]
    assert load_config(None, ["scale_min=1", "scale_max=1"]).scale_min == 1.0  # equal min and max are allowed
    assert load_config(None, ["base_lr=1e-4"]).base_lr == 1e-4  # YAML 1.1 reads 1e-4 as a string
    assert yaml.safe_load(to_yaml(cfg))["scale_min"] == 0.75


@pytest.mark.parametrize("override,message", [
    (["scale_mn=0.6"], "unknown config key 'scale_mn'. Did you mean scale_min"),
    (["train_h=big"], "config key 'train_h': expected int, got 'big'"),
    (["crop_type=middle"], "'middle' is not one of 'rand', 'center'"),
    (["scale_min=3"], "scale_min (3.0) must be positive and at most scale_max"),
    (["flip_prob=1.5"], "flip_prob must be a probability"),
    (["scale_min"], "is not key=value"),
    (["max_iters=0"], "'max_iters': 0 is out of range; give an integer >= 1"),
    (["max_iters=-3"], "'max_iters': -3 is out of range"),
    (["batch_size=-2"], "'batch_size': -2 is out of range"),
    (["dataset_weights=[1, -1]"], "'dataset_weights': [1.0, -1.0]"),
    (["train_h=0"], "'train_h': 0 is out of range"),
    (["save_every=0"], "'save_every': 0 is out of range"),
    (["workers=-1"], "'workers': -1 is out of range"),
    (["base_lr=0"], "'base_lr': 0.0 must be positive"),
    (["optimizer=adam"], "'adam' is not one of 'sgd', 'adamw'"),
    (["init=xavier"], "'xavier' is not one of 'mseg', 'kaiming'"),
    (["compile_backend=tensorrt"], "'tensorrt' is not one of 'inductor', 'aot_eager'"),
    # NaN passes every `<` bound and infinity every `>=`: refused as values, once for every float key.
    (["rotate_max=.nan"], "config key 'rotate_max': nan is not a finite number"),
    (["scale_max=.inf"], "config key 'scale_max': inf is not a finite number"),
    (["dataset=[a,b,c]", "dataset_weights=[.inf,1,1]"], "config key 'dataset_weights': inf is not a finite number"),
    (["ignore_label=0"], "config key 'ignore_label': 0: shards mark unlabeled pixels 255"),
    (["dataset=[a,b,a]"], "config key 'dataset': a is listed more than once"),
])
def test_bad_configs_are_refused(override, message):
    with pytest.raises(UserError) as error:
        load_config(None, override)
    assert message in str(error.value)


def test_bad_yaml_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("TRAIN:\n  base_lrr: 0.01\n")
    with pytest.raises(UserError, match="unknown config key 'base_lrr'"):
        load_config(path)
    path.write_text("DATA:\n  train_h: 473\nTRAIN:\n  train_h: 593\n")
    with pytest.raises(UserError, match="key 'train_h' is set twice"):
        load_config(path)


def test_recipes_load_with_mseg_lengths():
    """Every shipped recipe loads, and derives MSeg's iteration counts (reference §3.6)."""
    from helpers import REPO
    from mseg_fast.train.objective import derive_max_iters

    expected = {"1080/mseg-1m": 500_000, "1080/mseg-3m": 600_000, "1080/mseg-unrelabeled": 200_000,
                "1080/mseg-naive": 250_000, "720/mseg-3m": 428_571, "480/mseg-3m": 250_000,
                "1080/single-universal": 31_250, "1080/single-oracle": 31_250, "480/single-universal": 31_250}
    for name, iters in expected.items():
        overrides = ["dataset=[bdd-relabeled]"] if "single" in name else []
        cfg = load_config(REPO / "config" / f"{name}.yaml", overrides)
        assert derive_max_iters(cfg.num_examples, cfg.batch_size, len(cfg.dataset)) == iters, name
        assert (cfg.train_h - 1) % 8 == 0 and cfg.arch == "hrnet_w48"
        # The demo's short-run means stay off in MSeg's recipes.
        assert (cfg.optimizer, cfg.init, cfg.bn_recalibrate, cfg.val_crop) == ("sgd", "mseg", 0, "center"), name
    assert load_config(REPO / "config" / "1080" / "mseg-naive.yaml").taxonomy() == "naive"
    demo = load_config(REPO / "config" / "demo" / "train-demo.yaml")  # the demo's short run from scratch
    assert (demo.optimizer, demo.init, demo.val_crop) == ("adamw", "kaiming", "whole") and demo.bn_recalibrate > 0
    assert load_config(REPO / "config" / "1080" / "single-oracle.yaml").taxonomy() == "self"


def test_a_key_twice_in_one_section_and_broken_yaml_are_one_clear_error(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("TRAIN:\n  base_lr: 0.01\n  batch_size: 4\n  base_lr: 0.02\n")
    with pytest.raises(UserError, match=r"twice.yaml: not valid YAML: key 'base_lr' is set twice in one section "
                                        r"\(line 4, column 3\)"):
        load_config(twice)
    broken = tmp_path / "broken.yaml"
    broken.write_text("TRAIN:\n  base_lr: [0.01\n  batch_size: 4\n")
    with pytest.raises(UserError, match=r"broken.yaml: not valid YAML: .*\(line \d+, column \d+\)"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- base_lr\n")
    with pytest.raises(UserError, match="a config is a mapping"):
        load_config(listing)


# docs/training.md's GPU layouts for MSeg's batch-35 recipe: GPUs, overrides, crops of each dataset per step.
LAYOUTS = [(7, ["dataset_gpu_mapping=one_per_dataset"], 5), (5, [], 5), (8, ["batch_size=56"], 8),
           (4, ["batch_size=28"], 4), (2, ["batch_size=14"], 2), (1, ["batch_size=7"], 1)]


@pytest.mark.parametrize("gpus,overrides,crops", LAYOUTS)
def test_gpu_layouts_of_the_3m_recipe(gpus, overrides, crops):
    from mseg_fast.data.mixing import global_crops, plan_streams

    cfg = load_config(REPO / "config" / "1080" / "mseg-3m.yaml", overrides)
    per_dataset = global_crops(list(cfg.dataset), cfg.batch_size, gpus, cfg.dataset_weights, cfg.dataset_gpu_mapping)
    assert per_dataset == {name: crops for name in cfg.dataset}
    if cfg.dataset_gpu_mapping:  # MSeg's layout: rank i reads the i-th dataset only
        assert [[s.dataset for s in plan_streams(list(cfg.dataset), cfg.batch_size, gpus, rank,
                                                 mapping=cfg.dataset_gpu_mapping)] for rank in range(gpus)] == \
            [[name] for name in cfg.dataset]


def test_the_3m_recipe_on_7_gpus_needs_the_mapping():
    from mseg_fast.data.mixing import plan_streams

    cfg = load_config(REPO / "config" / "1080" / "mseg-3m.yaml")
    with pytest.raises(UserError, match="per-rank batch of 5 cannot give every one of the 7 datasets a crop"):
        plan_streams(list(cfg.dataset), cfg.batch_size, 7, 0)


# MSeg's 3M 1080p training config as mseg-semantic ships it (keys and values from the reference's §3.2-3.3).
MSEG_3M = """
DATA:
  dataset: [ade20k-150-relabeled, bdd-relabeled, cityscapes-19-relabeled, coco-panoptic-133-relabeled,
            idd-39-relabeled, mapillary-public65-relabeled, sunrgbd-37-relabeled]
  universal: True
  use_mgda: False
  use_multiple_datasets: True
  use_naive_taxonomy: False
TRAIN:
  tax_version: 4.0
  arch: hrnet
  network_name:
  layers:
  sync_bn: True
  train_h: 713
  train_w: 713
  scale_min: 0.5
  scale_max: 2.0
  short_size: 1080
  rotate_min: -10
  rotate_max: 10
  zoom_factor: 8
  ignore_label: 255
  aux_weight: 0.4
  num_examples: 3000000
  train_gpu: [0, 1, 2, 3, 4, 5, 6]
  dataset_gpu_mapping: {ade20k-150-relabeled: [0], bdd-relabeled: [1], cityscapes-19-relabeled: [2],
                        coco-panoptic-133-relabeled: [3], idd-39-relabeled: [4], mapillary-public65-relabeled: [5],
                        sunrgbd-37-relabeled: [6]}
  workers: 64
  batch_size: 35
  batch_size_val: 1
  base_lr: 0.01
  epochs: 10
  start_epoch: 0
  power: 0.9
  momentum: 0.9
  weight_decay: 0.0001
  manual_seed:
  print_freq: 10
  save_freq: 1
  save_path: default
  weight:
  resume:
  auto_resume: None
  evaluate: False
Distributed:
  dist_url: tcp://127.0.0.1:6795
  dist_backend: 'nccl'
  multiprocessing_distributed: True
  world_size: 1
  rank: 0
  use_apex: True
  opt_level: 'O0'
  keep_batchnorm_fp32:
  loss_scale:
"""


def test_an_mseg_config_loads_with_its_keys_mapped(tmp_path):
    path = tmp_path / "mseg-relabeled-3m.yaml"
    path.write_text(MSEG_3M)
    notes: list[str] = []
    cfg = load_config(path, ["shards=/data/shards"], notes)
    assert (cfg.arch, cfg.precision, cfg.workers, cfg.val_batch_size, cfg.manual_seed) == ("hrnet_w48", "fp32", 9, 1, 0)
    assert cfg.batch_size == 35 and cfg.dataset_gpu_mapping["sunrgbd-37-relabeled"] == [6] and len(cfg.dataset) == 7
    ours = load_config(REPO / "config" / "1080" / "mseg-3m.yaml", ["dataset_gpu_mapping=one_per_dataset"])
    same = ("dataset", "train_h", "short_size", "scale_min", "rotate_min", "num_examples", "base_lr", "power",
            "momentum", "weight_decay", "dataset_gpu_mapping")
    assert all(getattr(cfg, key) == getattr(ours, key) for key in same), "the same recipe as config/1080/mseg-3m.yaml"
    noted = {line.split("'")[1] for line in notes}
    assert {"arch", "train_gpu", "save_freq", "use_apex/opt_level", "workers", "sync_bn", "dist_url", "weight"} <= noted
    assert all(line.startswith("MSeg key '") for line in notes) and len(notes) == len(set(notes))
    assert load_config(REPO / "config" / "1080" / "mseg-3m.yaml", [], notes) and len(notes) == len(set(notes)), \
        "a config of ours gives no notes"


@pytest.mark.parametrize("change,message", [
    (("  weight:\n", "  weight: initmodel/hrnet_w48.pth\n"), "MSeg key 'weight': initmodel/hrnet_w48.pth: give it on "
                                                             "the command line as --init-from PATH"),
    (("  auto_resume: None\n", "  auto_resume: runs/mseg-3m\n"), "--resume auto"),
    (("  opt_level: 'O0'\n", "  opt_level: 'O2'\n"), "O2 keeps fp16 weights"),
    (("  arch: hrnet\n", "  arch: hrnet_ocr\n"), "hrnet_ocr is not in MSeg's code release"),
])
def test_mseg_keys_that_would_change_the_run_are_refused(tmp_path, change, message):
    path = tmp_path / "mseg.yaml"
    path.write_text(MSEG_3M.replace(*change))
    with pytest.raises(UserError, match=message):
        load_config(path)


def test_every_config_key_is_in_the_reference_page():
    page = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    missing = [f.name for f in dataclasses.fields(Config) if f"`{f.name}`" not in page]
    assert not missing, f"docs/config.md lacks {missing}"
