"""Benchmark tools/shard.py's work on real 1080p photos: images/s at 1 and 2 workers, the share
of worker time in label decode/convert/encode, and the label-codec comparison.

    python tools/bench_shard.py [--samples 400] [--json bench_out/shard.json] [--keep-shards bench_out/shards]

Reads photos and label maps from $MSEG_TEST_DATA (default ../shared/mseg-semantic-test-data).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from pathlib import Path

# Run from a checkout without `pip install`: mseg_fast is at the repository root. (Installed, this file is
# mseg_fast/tools/, whose parent holds no mseg_fast/ folder, and the package is already importable.)
if (Path(__file__).resolve().parents[1] / "mseg_fast").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mseg_fast import datasets
from mseg_fast.atomic import write_atomic
from mseg_fast.bench.shard_bench import DATASET, LABEL_MAPS, codec_table, image_check_table, make_tree
from mseg_fast.cli import USER_ERRORS, ToolParser, at_least, fail
from mseg_fast.errors import UserError
from mseg_fast.shards.build import ShardOptions, build_shards
from mseg_fast.shards.convert import ConvertOptions
from mseg_fast.shards.report import codec_share
from mseg_fast.targets import build_target

REPO = Path(__file__).resolve().parent.parent


def shard_runs(test_data: Path, mseg_api: Path, samples: int, workers: list[int], keep: Path | None = None) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        list_path = make_tree(test_data, root / "data", samples)
        spec = datasets.build_spec(DATASET, root / "data", mseg_api)
        target = build_target("universal", spec, mseg_api)
        entries, list_sha = datasets.read_list(list_path, DATASET, "train")
        convert = ConvertOptions(dataset=DATASET, data_dir=spec.data_dir, target=target)
        for count in workers:
            options = ShardOptions(samples_per_shard=8, workers=count)
            out = keep / "universal" / DATASET if keep and count == workers[-1] else root / f"out{count}"
            summary = build_shards(entries, list_path.name, list_sha, convert, "train", out, options,
                                   show_progress=False)
            total = sum(summary.stage_seconds.values())
            rows.append({"workers": count, "samples": summary.samples, "seconds": round(summary.seconds, 3),
                         "images_per_s": round(summary.samples / summary.seconds, 1),
                         # Excluding the worker processes' start (imports), a fixed cost per run.
                         "startup_seconds": round(summary.startup_seconds, 3),
                         "steady_images_per_s": round(summary.samples / (summary.seconds - summary.startup_seconds), 1),
                         "codec_share": round(codec_share(summary), 3),
                         "stage_ms_per_image": {k: round(1e3 * v / summary.samples, 2) for k, v in summary.stage_seconds.items()},
                         "worker_ms_per_image": round(1e3 * total / summary.samples, 2)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = ToolParser(__doc__)
    parser.add_argument("--samples", type=at_least(1), default=400, help="1080p samples to shard per run")
    parser.add_argument("--workers", type=at_least(1), nargs="+", default=[1, 2], help="worker processes, per run")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep-shards", type=Path, help="keep the last run's shards under this root (for bench_loader)")
    parser.add_argument("--mseg-api", type=Path, default=Path(os.environ.get("MSEG_API_ROOT", REPO.parent / "shared/mseg-api")),
                        help="mseg-api checkout (default: $MSEG_API_ROOT, else ../shared/mseg-api)")
    parser.add_argument("--photos", type=Path,
                        default=Path(os.environ.get("MSEG_TEST_DATA", REPO.parent / "shared/mseg-semantic-test-data")),
                        help="mseg-semantic-test-data (default: $MSEG_TEST_DATA, else ../shared/mseg-semantic-test-data)")
    args = parser.parse_args(argv)
    try:
        missing = [p for p in (args.photos / m for m in LABEL_MAPS) if not p.is_file()]
        if missing:
            raise UserError(f"--photos {args.photos}: {missing[0]} is missing; point it (or $MSEG_TEST_DATA) at "
                            f"a mseg-semantic-test-data checkout")
        if not (args.mseg_api / "mseg").is_dir():
            raise UserError(f"--mseg-api {args.mseg_api}: not a mseg-api checkout (no mseg/ in it); point it (or "
                            f"$MSEG_API_ROOT) at one")
        runs = shard_runs(args.photos, args.mseg_api, args.samples, args.workers, args.keep_shards)
    except USER_ERRORS as error:
        return fail(error)
    print(f"\nSharding {args.samples} real 1080p photos ({DATASET} -> universal), {os.cpu_count()} cores:")
    print(f"{'workers':>7} {'img/s':>7} {'speed-up':>8} {'steady':>7} {'speed-up':>8} {'codecs':>7}   "
          f"ms/img per stage (worker time)")
    for run in runs:
        stages = ", ".join(f"{k} {v}" for k, v in run["stage_ms_per_image"].items())
        print(f"{run['workers']:>7} {run['images_per_s']:>7} {run['images_per_s'] / runs[0]['images_per_s']:>7.2f}x "
              f"{run['steady_images_per_s']:>7} {run['steady_images_per_s'] / runs[0]['steady_images_per_s']:>7.2f}x "
              f"{100 * run['codec_share']:>6.0f}%   {stages}")
    print("steady = excluding the start of the worker processes (a fixed cost, about 0.5 s, per run)")
    codecs = codec_table(args.photos)
    print("\nLabel PNG codecs, 1920x1080, one thread (ms):")
    print(f"{'bits':>4} {'encoder':<38} {'bytes':>7} {'encode':>7} {'dec cv2':>8} {'dec PIL':>8}")
    for row in codecs:
        print(f"{row['bits']:>4} {row['encoder']:<38} {row['bytes']:>7} {row['encode_ms']:>7.2f} "
              f"{row['decode_opencv_ms']:>8.2f} {row['decode_pillow_ms']:>8.2f}")
    checks = image_check_table(args.photos)
    print("\nChecking a 1080p JPEG decodes (ms): " + ", ".join(f"{r['method']} {r['ms']:.2f}" for r in checks))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        machine = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                   "python": platform.python_version()}
        write_atomic(args.json, json.dumps({"machine": machine, "shard": runs, "label_codecs": codecs,
                                            "image_check": checks}, indent=1).encode())
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
