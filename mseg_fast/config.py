"""One config path: a frozen dataclass, filled from one YAML file, then `key=value` overrides.

YAML files keep MSeg's key names and may keep its sections (`DATA:`, `TRAIN:`, ...): sections
are flattened, as MSeg does, but a key given twice is an error instead of a silent overwrite.
An override names a key by its bare name and its value is parsed as YAML
(`scale_min=0.75`, `dataset=[ade20k-150-relabeled,bdd-relabeled]`, `dataset_weights=null`).
Unknown keys and values of the wrong type are errors that suggest the closest key. Unlike
MSeg, keys whose default is empty can be set from the command line.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mseg_fast.constants import IGNORE_LABEL
from mseg_fast.data.geometry import Augment
from mseg_fast.errors import UserError
from mseg_fast.mseg_keys import translate as translate_mseg
from mseg_fast.textfile import read_text

_MSEG = Augment()


@dataclass(frozen=True)
class Config:
    """Every setting, with MSeg's values as defaults (reference §3.3, §3.7)."""

    # Data: which shards, in which taxonomy.
    dataset: list[str] = field(default_factory=list)
    shards: str = "shards"  # root written by tools/shard.py (holds <taxonomy>/<dataset>/)
    universal: bool = True  # False: the dataset's own taxonomy (oracle training)
    use_naive_taxonomy: bool = False
    dataset_weights: list[float] | None = None  # per-dataset share of each batch; equal by default
    # MSeg's one-dataset-per-rank layout: dataset -> ranks; `one_per_dataset`: rank i reads the i-th dataset.
    dataset_gpu_mapping: dict[str, list[int]] | None = None
    loader: Literal["dali", "torch"] | None = None  # None: DALI when training on CUDA, else torch (docs/config.md)
    workers: int | None = None  # loader threads (DALI) or worker processes (torch) per rank; None: its cores
    jpeg_decode: Literal["auto", "window", "whole"] = "auto"  # DALI: decode the crop's box, or all then slice
    shuffle_buffer: int = 256  # DALI reader's shuffle buffer, per dataset
    verify_shards: bool = False  # at start, check every shard's sha256 (else only presence and sizes)
    val_split: str = "val"
    # Augmentation: MSeg's values, kept once, in geometry.Augment.
    short_size: int = _MSEG.short_size
    train_h: int = _MSEG.crop_h
    train_w: int = _MSEG.crop_w
    scale_min: float = _MSEG.scale_min
    scale_max: float = _MSEG.scale_max
    rotate_min: float = _MSEG.rotate_min
    rotate_max: float = _MSEG.rotate_max
    rotate_prob: float = _MSEG.rotate_prob
    flip_prob: float = _MSEG.flip_prob
    blur_prob: float = _MSEG.blur_prob
    blur_kernel: int = 5
    blur_sigma: float = 1.1
    crop_type: Literal["rand", "center"] = "rand"
    val_crop: Literal["center", "whole"] = "center"
    ignore_label: int = IGNORE_LABEL  # MSeg's key; shards mark unlabeled pixels 255, so only 255 is accepted
    output_dtype: Literal["float32", "float16"] = "float32"
    # Model and optimisation (reference §3.3, §3.10).
    arch: Literal["hrnet_w48", "hrnet_w18", "psp"] = "hrnet_w48"
    layers: Literal[50, 101, 152] = 50  # PSPNet's ResNet depth (MSeg's key; HRNet ignores it)
    pretrained: str | None = None  # ImageNet checkpoint for the backbone (HRNet's, or PSPNet's deep-base ResNet)
    aux_weight: float = 0.4  # PSPNet's auxiliary loss; HRNet has no auxiliary head
    # MSeg: SGD from N(0, 0.001) weights. For short runs from scratch (the demo), AdamW and He-initialised
    # convolutions learn the rare classes several times sooner (docs/changelog.md).
    optimizer: Literal["sgd", "adamw"] = "sgd"
    init: Literal["mseg", "kaiming"] = "mseg"  # convolutions' random init, before pretrained / --init-from
    base_lr: float = 0.01
    power: float = 0.9
    momentum: float = 0.9  # SGD's; AdamW keeps PyTorch's betas
    weight_decay: float = 1e-4
    num_examples: int = 1_000_000  # crops per dataset over the run (MSeg's meaning)
    max_iters: int | None = None  # set to override the length derived from num_examples
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # MSeg's opt_level O0 is fp32 (docs/training.md)
    tf32: bool = False  # let fp32 convolutions and matmuls run as TF32 on Ampere/Hopper (faster; MSeg's fp32 is IEEE)
    deterministic: bool = False  # deterministic CUDA kernels where PyTorch has them (slower; train/numerics.py)
    use_mgda: bool = False  # MGDA's min-norm combination of per-dataset gradients instead of the mean
    use_ccsa: bool = False  # CCSA: add the contrastive alignment of embeddings across datasets (reference §6)
    ccsa_alpha: float = 0.25  # weight of the alignment loss; the cross-entropy terms get 1 - alpha
    ccsa_pairs: int = 100  # positive pairs per rank and step; three times as many negative pairs
    ccsa_margin: float = 1.0  # negatives closer than this are pushed apart
    channels_last: bool = False
    compile: bool = False
    # torch.compile's backend. inductor generates kernels (Triton on a GPU, C++ on the CPU) and is the one that
    # speeds training up; aot_eager traces forward and backward as inductor does but runs the traced graphs
    # without generating code: a check in seconds that the model and step compile (the tests use it).
    compile_backend: Literal["inductor", "aot_eager"] = "inductor"
    # Run.
    batch_size: int = 14  # global batch per step (MSeg: total per node, one node)
    manual_seed: int = 0
    save_path: str = "runs/default"
    print_freq: int = 10  # iterations between log lines
    save_every: int = 1000  # iterations between checkpoints
    keep_last: int = 2  # checkpoints kept besides the periodic ones
    keep_every: int = 0  # also keep every N-th iteration's checkpoint (0: none)
    val_every: int = 0  # iterations between validations (and one at the end); 0: no validation
    val_batch_size: int = 1
    bn_recalibrate: int = 0  # before each validation, recompute BatchNorm statistics over this many training batches

    def taxonomy(self) -> str:
        """The shard taxonomy folder this config trains on."""
        if not self.universal:
            return "self"
        return "naive" if self.use_naive_taxonomy else "universal"


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check(value: Any, hint: Any, key: str) -> Any:
    """Return `value` coerced to `hint`, or raise UserError naming the key and the type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _check(value, option, key)
            except UserError as error:
                errors.append(str(error))
        raise UserError(errors[0])
    if origin is Literal:
        if value not in args:
            raise UserError(f"config key '{key}': {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if isinstance(value, str) and args and args[0] is str:
            value = [value]  # `dataset=mapillary` means a one-element list, as in MSeg
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key '{key}': expected a list, got {value!r}")
        return [_check(v, args[0], key) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}': expected a mapping, got {value!r}")
        return {_check(k, args[0], key): _check(v, args[1], key) for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads `1e-4` (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        # Every float key is a range (a scale, an angle, a weight, a rate): .nan passes every `<` test and
        # .inf every `>=`, so they are refused here, once, not at each bound.
        raise UserError(f"config key '{key}': {value} is not a finite number")
    if hint in (int, float, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise UserError(f"config key '{key}': expected {_type_name(hint)}, got {value!r}")
    return value


def _hints() -> dict[str, Any]:
    return typing.get_type_hints(Config)


def _unknown(key: str, where: str) -> UserError:
    close = difflib.get_close_matches(key, [f.name for f in dataclasses.fields(Config)], n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return UserError(f"{where}: unknown config key '{key}'.{hint}")


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error (YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is set twice in one section", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """The parser's complaint with its line and column, without the traceback."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def _flatten(raw: dict, path: Path) -> dict:
    known = {f.name for f in dataclasses.fields(Config)}
    flat: dict = {}
    for key, value in raw.items():
        items = value.items() if isinstance(value, dict) and key not in known else [(key, value)]
        for name, item in items:
            if name in flat:
                raise UserError(f"{path}: key '{name}' is set twice (sections are flattened, as in MSeg)")
            flat[name] = item
    return flat


def parse_overrides(items: list[str]) -> dict:
    """`key=value` strings -> {key: YAML-parsed value}."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"override '{item}' is not key=value (e.g. scale_min=0.75)")
        try:
            out[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise UserError(f"override '{item}': the value is not valid YAML ({error})") from None
    return out


# dataset_gpu_mapping's shorthand for MSeg's layout: rank i reads the config's i-th dataset (MSeg's 7 GPUs).
ONE_PER_DATASET = "one_per_dataset"


def _one_per_dataset(values: dict) -> dict:
    """`values` with the shorthand mapping spelt out (after the dataset list is known)."""
    if values.get("dataset_gpu_mapping") != ONE_PER_DATASET:
        return values
    datasets = _check(values.get("dataset", []), _hints()["dataset"], "dataset")  # [] is the key's default
    return {**values, "dataset_gpu_mapping": {name: [rank] for rank, name in enumerate(datasets)}}


def build_config(values: dict, where: str = "config") -> Config:
    hints = _hints()
    checked = {}
    values = _one_per_dataset(values)
    for key, value in values.items():
        if key not in hints:
            raise _unknown(key, where)
        checked[key] = _check(value, hints[key], key)
    return validate(Config(**checked))


def shipped_recipes() -> Path:
    """The recipes this project ships: config/ in a checkout, mseg_fast/recipes/ once installed (setup.py)."""
    installed = Path(__file__).parent / "recipes"
    return installed if installed.is_dir() else Path(__file__).parents[1] / "config"


def recipe_path(name: str | Path) -> Path:
    """A config file as given, else the shipped recipe of that name: `1080/mseg-3m`, `1080/mseg-3m.yaml` and
    `config/1080/mseg-3m.yaml` all name config/1080/mseg-3m.yaml, from any folder and once installed."""
    path = Path(name)
    if path.exists() or path.is_absolute():
        return path
    relative = path.as_posix().removeprefix("config/")
    shipped = shipped_recipes() / (relative if relative.endswith((".yaml", ".yml")) else relative + ".yaml")
    return shipped if shipped.is_file() else path


def load_config(path: str | Path | None, overrides: list[str] = (), notes: list[str] | None = None) -> Config:
    """Read a YAML config (or start from the defaults) and apply `key=value` overrides.

    A config of MSeg's own (mseg-semantic's config/train/...) is read with its keys mapped onto these
    (mseg_keys.py); a line per mapped or ignored key goes to `notes` when given."""
    values: dict = {}
    if path is not None:
        path = recipe_path(path)
        try:
            raw = yaml.load(read_text(path, "config file"), Loader=_StrictLoader) or {}
        except FileNotFoundError:
            names = sorted(p.relative_to(shipped_recipes()).with_suffix("").as_posix()
                           for p in shipped_recipes().glob("*/*.yaml"))
            raise UserError(f"config file {path} does not exist; give a path, or a shipped recipe: "
                            f"{', '.join(names)}") from None
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"config file {path} cannot be read ({error})") from None
        except yaml.YAMLError as error:
            raise UserError(f"{path}: not valid YAML: {_yaml_problem(error)}") from None
        if not isinstance(raw, dict):
            raise UserError(f"{path}: a config is a mapping of keys (sections DATA:, TRAIN:, ...), not "
                            f"{type(raw).__name__}")
        values, mapped = translate_mseg(_flatten(raw, path))
        if notes is not None:
            notes.extend(mapped)
        for key in values:
            if key not in _hints():
                raise _unknown(key, str(path))
    for key, value in parse_overrides(list(overrides)).items():
        if key not in _hints():
            raise _unknown(key, "command line")
        values[key] = value
    return build_config(values, str(path or "command line"))


# Allowed ranges (inclusive lower bound, and whether it may equal it) of the numeric keys; None values are
# checked where None is allowed. Checked when the config is read, so a bad value never reaches a step.
_AT_LEAST = {"bn_recalibrate": 0, "batch_size": 1, "train_h": 1, "train_w": 1, "short_size": 1, "save_every": 1, "print_freq": 1,
             "keep_last": 1, "keep_every": 0, "val_every": 0, "val_batch_size": 1, "num_examples": 1, "max_iters": 1,
             "workers": 0, "shuffle_buffer": 1, "blur_kernel": 1, "manual_seed": 0, "ccsa_pairs": 1}
_POSITIVE = ("base_lr", "blur_sigma")
_NOT_NEGATIVE = ("power", "weight_decay", "aux_weight", "momentum")


def _check_ranges(config: Config) -> None:
    for key, low in _AT_LEAST.items():
        value = getattr(config, key)
        if value is not None and value < low:
            unset = " (or null for the default)" if key in ("max_iters", "workers") else ""
            raise UserError(f"config key '{key}': {value} is out of range; give an integer >= {low}{unset}")
    for key in _POSITIVE:
        if not getattr(config, key) > 0:
            raise UserError(f"config key '{key}': {getattr(config, key)} must be positive")
    for key in _NOT_NEGATIVE:
        if not getattr(config, key) >= 0:
            raise UserError(f"config key '{key}': {getattr(config, key)} must be >= 0")
    if config.momentum >= 1:
        raise UserError(f"config key 'momentum': {config.momentum} must be below 1")
    if config.dataset_weights is not None and (any(not w >= 0 for w in config.dataset_weights)
                                               or sum(config.dataset_weights) <= 0):
        raise UserError(f"config key 'dataset_weights': {config.dataset_weights}: weights are shares of a batch, "
                        f">= 0 with a positive sum")
    if config.dataset_gpu_mapping and any(r < 0 for ranks in config.dataset_gpu_mapping.values() for r in ranks):
        raise UserError(f"config key 'dataset_gpu_mapping': {config.dataset_gpu_mapping} names a negative rank")


def validate(config: Config) -> Config:
    """Every value within its range, and the cross-key checks."""
    _check_ranges(config)
    if config.ignore_label != IGNORE_LABEL:
        raise UserError(f"config key 'ignore_label': {config.ignore_label}: shards mark unlabeled pixels "
                        f"{IGNORE_LABEL} (MSeg's value in every config), and the loss and the metrics ignore that; "
                        f"set ignore_label: {IGNORE_LABEL} or remove the key")
    repeated = sorted({d for d in config.dataset if config.dataset.count(d) > 1})
    if repeated:
        raise UserError(f"config key 'dataset': {', '.join(repeated)} is listed more than once; name each dataset "
                        f"once (to draw more of one, set dataset_weights)")
    if config.scale_min > config.scale_max or config.scale_min <= 0:
        raise UserError(f"scale_min ({config.scale_min}) must be positive and at most scale_max ({config.scale_max})")
    if config.rotate_min > config.rotate_max:
        raise UserError(f"rotate_min ({config.rotate_min}) must be at most rotate_max ({config.rotate_max})")
    for key in ("rotate_prob", "flip_prob", "blur_prob"):
        if not 0.0 <= getattr(config, key) <= 1.0:
            raise UserError(f"{key} must be a probability in [0, 1], got {getattr(config, key)}")
    if config.dataset_weights is not None and len(config.dataset_weights) != len(config.dataset):
        raise UserError(f"dataset_weights has {len(config.dataset_weights)} values for {len(config.dataset)} datasets")
    if config.use_mgda and config.precision == "fp16":
        raise UserError("use_mgda combines raw per-dataset gradients, which fp16's loss scaling would distort; "
                        "set precision=fp32 (MSeg's) or precision=bf16")
    if config.use_ccsa:
        if config.use_mgda:
            raise UserError("use_ccsa and use_mgda replace the same step; set only one of them")
        if len(config.dataset) < 2:
            raise UserError("use_ccsa aligns datasets with each other: name at least two in 'dataset'")
        if config.dataset_gpu_mapping:
            raise UserError("use_ccsa draws its pairs across the datasets of each rank's batch; with "
                            "dataset_gpu_mapping a rank holds one dataset. Remove dataset_gpu_mapping")
        if not 0.0 <= config.ccsa_alpha <= 1.0 or config.ccsa_pairs < 1 or config.ccsa_margin <= 0:
            raise UserError(f"ccsa_alpha must lie in [0, 1] (got {config.ccsa_alpha}), ccsa_pairs be at least 1 "
                            f"(got {config.ccsa_pairs}) and ccsa_margin be positive (got {config.ccsa_margin})")
    if config.blur_kernel % 2 == 0:
        raise UserError(f"blur_kernel must be odd, got {config.blur_kernel}")
    return config


def to_yaml(config: Config) -> str:
    """The resolved config, for run folders and checkpoints."""
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)
