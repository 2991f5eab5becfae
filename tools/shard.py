"""Write WebDataset shards of MSeg datasets, labels converted to the training taxonomy.

    python tools/shard.py --dataset mapillary --data-root DATA --mseg-api MSEG_API --shards shards

Writes SHARDS/<taxonomy>/<dataset>/<split>-NNNNNN.tar, a DALI index beside each, and
manifest.json. `--verify` only re-checks existing shards against the manifest.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

# Run from a checkout without `pip install`: mseg_fast is at the repository root. (Installed, this file is
# mseg_fast/tools/, whose parent holds no mseg_fast/ folder, and the package is already importable.)
if (Path(__file__).resolve().parents[1] / "mseg_fast").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mseg_fast import datasets
from mseg_fast.apiroot import find_mseg_api
from mseg_fast.cli import USER_ERRORS, ToolParser, at_least, fail
from mseg_fast.errors import UserError
from mseg_fast.shards.build import ShardOptions, build_shards
from mseg_fast.shards.convert import ConvertOptions
from mseg_fast.shards.manifest import verify_split
from mseg_fast.shards.report import print_summary
from mseg_fast.targets import TAXONOMIES, build_target

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}


def byte_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([KMG]?)i?B?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size: use bytes or a suffix, e.g. 500MB, 1GB")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ToolParser(__doc__)
    parser.add_argument("--dataset", required=True, help="taxonomy name, short name (mapillary, ...) or 'all'")
    parser.add_argument("--unrelabeled", action="store_true", help="use the unrelabeled labels of short names / all")
    parser.add_argument("--taxonomy", choices=TAXONOMIES, default="universal",
                        help="labels in: universal (194 classes), naive (MSeg's naive merge), self (the dataset's own)")
    parser.add_argument("--split", default="train", help="list to shard: train, val, ... (default train)")
    parser.add_argument("--data-root", type=Path, help="folder holding ADE20K/, BDD/, Cityscapes/, ...")
    parser.add_argument("--mseg-api", help="mseg-api checkout (default: $MSEG_API_ROOT, else the installed mseg)")
    parser.add_argument("--shards", "--out", dest="out", metavar="DIR", type=Path, required=True,
                        help="the shard root (as every command calls it); shards go to DIR/<taxonomy>/<dataset>/")
    parser.add_argument("--list", action="append", default=[], metavar="[NAME=]FILE",
                        help="use this list instead of mseg-api's; NAME=FILE (repeatable) with several datasets")
    parser.add_argument("--with-relabeled", action="store_true",
                        help="also store each image's relabeled label (universal ids), for MSeg's relabeled "
                             "evaluation of unrelabeled training sets' val splits")
    parser.add_argument("--relabeled-list", type=Path, metavar="FILE",
                        help="with --with-relabeled: the relabeled list instead of mseg-api's (same images, same order)")
    parser.add_argument("--extra-datasets", type=Path, help="YAML file registering datasets of your own")
    parser.add_argument("--tsv", type=Path, help="master TSV to use instead of mseg-api's MSeg_master.tsv")
    parser.add_argument("--workers", type=at_least(1), default=os.cpu_count() or 1, help="processes (default: all cores)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--samples-per-shard", type=at_least(1), help="samples per shard (default 256)")
    size.add_argument("--shard-size", type=byte_size, help="target shard size, e.g. 500MB")
    parser.add_argument("--short-size", type=at_least(1), help="store images resized to this short side (JPEG, quality 95)")
    parser.add_argument("--seed", type=at_least(0), default=0, help="seed of the global shuffle (default 0)")
    parser.add_argument("--skip-bad", action="store_true", help="skip bad samples, listing them in the manifest")
    parser.add_argument("--force", action="store_true",
                        help="rewrite every shard (by default shards whose sources and settings are unchanged are kept)")
    parser.add_argument("--verify", action="store_true", help="only re-check existing shards against the manifest")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.samples_per_shard is None and args.shard_size is None:
        args.samples_per_shard = 256
    return args


def list_overrides(values: list[str], names: list[str]) -> dict[str, Path]:
    """Parse `--list FILE` (one dataset) and `--list NAME=FILE` (any of several)."""
    overrides: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or (len(names) == 1 and name not in names):  # a plain path (may itself hold '=')
            if len(names) > 1:
                raise UserError(f"--list {value}: with several datasets, say which list is whose: --list NAME=FILE")
            name, path = names[0], value
        if name not in names:
            raise UserError(f"--list {value}: '{name}' is not among the datasets being sharded ({', '.join(names)})")
        overrides[name] = Path(path)
    return overrides


def verify(args: argparse.Namespace, names: list[str], extras: dict) -> int:
    """Shards against their manifest; with --data-root, also against the source files they were made from."""
    failed = False
    api_root = find_mseg_api(args.mseg_api) if args.data_root else None
    for name in names:
        directory = args.out / args.taxonomy / name
        if not (directory / "manifest.json").is_file():
            raise UserError(f"no shards to verify at {directory} (no manifest.json); check --out and --taxonomy")
        data_dir = datasets.build_spec(name, args.data_root, api_root, extras).data_dir if args.data_root else None
        problems = verify_split(directory, args.split, data_dir)
        for problem in problems:
            print(f"MISMATCH {problem}", file=sys.stderr)
        print(f"{directory} [{args.split}]: {'FAILED' if problems else 'ok'}")
        failed |= bool(problems)
    return 1 if failed else 0


def with_relabeled(args: argparse.Namespace, name: str, entries: list, list_path: Path, api_root: Path,
                   extras: dict, data_dir: Path):
    """The entries paired line by line with the relabeled list's labels, the relabeled labels' table into
    universal ids, and the relabeled list's (name, sha256)."""
    relabeled = datasets.relabeled_name(name)
    spec = datasets.build_spec(relabeled, args.data_root, api_root, extras)
    if spec.data_dir != data_dir:
        raise UserError(f"{relabeled} lives in {spec.data_dir} and {name} in {data_dir}: --with-relabeled needs both "
                        f"label sets under one data folder, as mseg-api lays them out")
    path = args.relabeled_list or spec.list_path(args.split)
    relabeled_entries, sha = datasets.read_list(path, relabeled, args.split)
    paired = datasets.pair_relabeled(entries, relabeled_entries, list_path, path)
    return paired, build_target("universal", spec, api_root, args.tsv), (path.name, sha)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        extras = datasets.load_extra_datasets(args.extra_datasets)
        names = datasets.resolve_names(args.dataset, args.unrelabeled, extras)
        if args.verify:
            return verify(args, names, extras)
        if args.data_root is None:
            raise UserError("--data-root is required to write shards")
        if args.with_relabeled and args.taxonomy != "universal":
            raise UserError("--with-relabeled stores labels for MSeg's universal evaluation: use --taxonomy universal")
        if args.with_relabeled and args.short_size:
            raise UserError("--with-relabeled is for evaluation, which scores labels at their own size: "
                            "drop --short-size")
        if args.relabeled_list and (not args.with_relabeled or len(names) != 1):
            raise UserError("--relabeled-list goes with --with-relabeled and one dataset")
        lists = list_overrides(args.list, names)
        api_root = find_mseg_api(args.mseg_api)
        options = ShardOptions(seed=args.seed, samples_per_shard=args.samples_per_shard, shard_size=args.shard_size,
                               short_size=args.short_size, skip_bad=args.skip_bad, workers=max(1, args.workers),
                               force=args.force)
        for name in names:
            spec = datasets.build_spec(name, args.data_root, api_root, extras)
            target = build_target(args.taxonomy, spec, api_root, args.tsv)
            list_path = lists.get(name) or spec.list_path(args.split)
            entries, list_sha = datasets.read_list(list_path, name, args.split)
            relabeled_target, relabeled_list = None, None
            if args.with_relabeled:
                entries, relabeled_target, relabeled_list = with_relabeled(args, name, entries, list_path, api_root,
                                                                           extras, spec.data_dir)
            convert = ConvertOptions(dataset=name, data_dir=spec.data_dir, target=target,
                                     relabeled_target=relabeled_target, short_size=args.short_size)
            summary = build_shards(entries, list_path.name, list_sha, convert, args.split,
                                   args.out / args.taxonomy / name, options, show_progress=not args.no_progress,
                                   relabeled_list=relabeled_list)
            print_summary(summary)
    except USER_ERRORS as error:
        return fail(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
