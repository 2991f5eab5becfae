"""Prove the GPU path on one GPU: DALI's GPU graph against its CPU graph, resume, loader, step and evaluation speed.

    python tools/gpu_check.py --out gpu_check.json            # on a GPU machine with DALI installed
    python tools/gpu_check.py --dry-cpu --out dry.json        # the CPU stands in (what the test suite runs)

Builds shards of real 1080p photos (mseg-semantic-test-data, $MSEG_TEST_DATA) with tools/shard.py, then runs
each check in a process of its own (a crash is that check's result; the others still run), prints a table
and writes one JSON file. The checks: mseg_fast/bench/gpu_checks.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from mseg_fast.bench.gpu_checks import Context, checks, context_from_json, context_to_json
from mseg_fast.bench.isolated import run_isolated
from mseg_fast.bench.shard_bench import DATASET, make_tree
from mseg_fast.cli import USER_ERRORS, at_least, fail
from mseg_fast.errors import UserError
from mseg_fast.loader import dali_available
from mseg_fast.atomic import write_atomic

REPO = Path(__file__).resolve().parent.parent
TIMEOUTS = {"versions": 60, "train_graph": 180, "val_graph": 120, "resume": 120, "throughput": 240, "train": 300, "eval": 240}


def run_one(name: str, context: str, result: Path) -> int:
    """The child's side: run one check, write its result (an exception is a failed result, with its text)."""
    try:
        out = checks()[name](context_from_json(context))
    except Exception:  # noqa: BLE001 - recorded as this check's result; the parent goes on
        out = {"ok": False, "error": traceback.format_exc()[-3000:]}
    write_atomic(result, json.dumps(out, indent=1).encode())
    return 0


def prepare(ctx_work: Path, photos: Path, mseg_api: Path, samples: int) -> Path:
    """Shards (train and val) of `samples` real 1080p photos, written by tools/shard.py as a user would."""
    listing = make_tree(photos, ctx_work / "data", samples)
    shards = ctx_work / "shards"
    for split in ("train", "val"):
        command = [sys.executable, str(REPO / "tools" / "shard.py"), "--dataset", DATASET, "--split", split, "--list",
                   str(listing), "--data-root", str(ctx_work / "data"), "--out", str(shards), "--no-progress",
                   "--samples-per-shard", "8", "--mseg-api", str(mseg_api)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            raise UserError(f"sharding the check's photos failed: {result.stderr.strip()}")
    return shards


def summary(result: dict) -> str:
    """A few figures of a check's result for the table, or the last line of its error."""
    data = result.get("result", {})
    error = result.get("error") or data.get("error")
    if error:
        return error.strip().splitlines()[-1][:120] if error.strip() else "no output"
    keys = ("gpu", "dali", "image_mad_levels", "label_agreement", "samples_per_s", "peak_memory_gib",
            "data_wait_share", "same_batches_after_resume", "skipped")
    parts = [f"{k} {data[k]}" for k in keys if data.get(k) is not None and not isinstance(data[k], dict)]
    if "speedup" in data:  # evaluation: the inference core against the MSeg-style evaluator
        ours, mseg = data["runs"]["ours"], data["runs"]["mseg_style"]
        parts.append(f"{ours['images_per_s']} vs {mseg['images_per_s']} images/s ({data['speedup']}x), "
                     f"{100 * ours['outside_forward_share']:.0f} % outside forward, agree {data['pixel_agreement']}")
    for name, part in data.items():
        if isinstance(part, dict) and "vs_mseg" in part:  # throughput: one entry per loader
            parts.append(f"{name} {part['samples_per_s']}/s ({part['vs_mseg']}x)")
        elif isinstance(part, dict) and "image_mad_levels" in part:  # validation: one entry per crop mode
            parts.append(f"{name}: mad {part['image_mad_levels']}, labels {part['label_agreement']}")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-cpu", action="store_true", help="the CPU stands in for the GPU, small sizes")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON report")
    parser.add_argument("--work", type=Path, help="folder for shards and runs (default: a temporary one)")
    parser.add_argument("--photos", type=Path, default=Path(os.environ.get(
        "MSEG_TEST_DATA", REPO.parent / "shared" / "mseg-semantic-test-data")), help="mseg-semantic-test-data")
    parser.add_argument("--mseg-api", type=Path, default=Path(os.environ.get(
        "MSEG_API_ROOT", REPO.parent / "shared" / "mseg-api")), help="an mseg-api checkout")
    parser.add_argument("--samples", type=at_least(0), default=0, help="photos to shard (default 48, 16 when dry)")
    parser.add_argument("--only", nargs="+", help="run these checks only")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    parser.add_argument("--context", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one:
        return run_one(args.run_one, args.context, args.result)
    try:
        if not args.dry_cpu and not torch.cuda.is_available():
            raise UserError("no CUDA device is available: run this on a GPU machine, or with --dry-cpu")
        if not dali_available():
            raise UserError("NVIDIA DALI is not installed: pip install -e .[dali] (CUDA 12) or .[dali-cu13] (CUDA 13)")
        if not (args.photos / "demo_images").is_dir():
            raise UserError(f"--photos {args.photos}: not mseg-semantic-test-data (no demo_images/); set MSEG_TEST_DATA")
        unknown = set(args.only or []) - set(checks())
        if unknown:
            raise UserError(f"--only {' '.join(sorted(unknown))}: no such check; the checks are {', '.join(checks())}")
        if args.out.is_dir():
            raise UserError(f"--out {args.out} is a folder; give the report's file name, e.g. {args.out / 'gpu_check.json'}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        # Written now, and again after every check: an unwritable --out is found before minutes of checks, and
        # a run that is stopped keeps the results it had.
        write_atomic(args.out, json.dumps({"dry_cpu": args.dry_cpu, "checks": {}}, indent=1).encode())
    except USER_ERRORS as error:
        return fail(error)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        return run_checks(args, work)
    except USER_ERRORS as error:
        return fail(error)
    finally:
        if args.work is None:  # shards and runs of real 1080p photos: about 85 MB a run
            shutil.rmtree(work, ignore_errors=True)


def run_checks(args: argparse.Namespace, work: Path) -> int:
    print(f"preparing shards of real photos in {work} ...", flush=True)
    shards = prepare(work, args.photos, args.mseg_api, args.samples or (16 if args.dry_cpu else 48))
    ctx = Context("cpu" if args.dry_cpu else "cuda", args.dry_cpu, str(args.photos), str(shards), str(work))
    names = [n for n in checks() if not args.only or n in args.only]
    results, start = {}, time.monotonic()
    for number, name in enumerate(names, 1):
        print(f"[{number}/{len(names)}] {name} ...", end=" ", flush=True)
        command = [sys.executable, str(Path(__file__).resolve()), "--run-one", name, "--context", context_to_json(ctx),
                   "--result", str(work / "result.json")]
        results[name] = run_isolated(command, work / "result.json", TIMEOUTS.get(name.split("/")[0], 300))
        print(f"{results[name]['status']} ({results[name]['seconds']} s)", flush=True)
        write_atomic(args.out, json.dumps({"device": ctx.device, "dry_cpu": args.dry_cpu, "finished": False,
                                           "checks": results}, indent=1).encode())
    print(f"\n{'check':<32} {'status':<8} {'s':>6}   figures")
    for name, result in results.items():
        print(f"{name:<32} {result['status']:<8} {result['seconds']:>6}   {summary(result)}")
    report = {"device": ctx.device, "dry_cpu": args.dry_cpu, "seconds": round(time.monotonic() - start, 1),
              "finished": True, "checks": results}
    write_atomic(args.out, json.dumps(report, indent=1).encode())
    failed = [n for n, r in results.items() if r["status"] != "ok"]
    print(f"\nwrote {args.out}; " + (f"not ok: {', '.join(failed)}" if failed else "every check ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
