"""Prove the GPU path on one GPU: DALI's GPU graph against its CPU graph, resume, loader, step and evaluation speed.

    python tools/gpu_check.py --json gpu_check.json                      # every check, on a GPU machine
    python tools/gpu_check.py --only data --deadline 300 --json data.json   # the first half (graphs, resume, loader)
    python tools/gpu_check.py --only model --deadline 420 --json model.json # the second (steps, training, evaluation)
    python tools/gpu_check.py --dry-cpu --json dry.json                  # the CPU stands in (what the test suite runs)

Builds shards of real 1080p photos (mseg-semantic-test-data, $MSEG_TEST_DATA) with tools/shard.py, then runs
each check in a process of its own (a crash is that check's result; the others still run; a check past its
time limit is killed with every process it started), prints a table and writes one JSON file, anew after
every check. Without DALI the checks that need it are recorded as skipped and the others run (training
with the torch fallback). The checks: mseg_fast/bench/gpu_checks.py.
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

# Run from a checkout without `pip install`: mseg_fast is at the repository root. (Installed, this file is
# mseg_fast/tools/, whose parent holds no mseg_fast/ folder, and the package is already importable.)
if (Path(__file__).resolve().parents[1] / "mseg_fast").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mseg_fast.bench.gpu_checks import Context, checks, context_from_json, context_to_json, select
from mseg_fast.bench.isolated import run_isolated
from mseg_fast.bench.shard_bench import DATASET, make_tree
from mseg_fast.cli import USER_ERRORS, ToolParser, at_least, fail
from mseg_fast.errors import UserError
from mseg_fast.loader import dali_available
from mseg_fast.atomic import write_atomic

REPO = Path(__file__).resolve().parent.parent


def run_one(name: str, context: str, result: Path) -> int:
    """The child's side: run one check, write its result (an exception is a failed result, with its text)."""
    try:
        out = checks()[name].run(context_from_json(context))
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
            "device_used_gib", "data_wait_share", "same_batches_after_resume", "skipped")
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


def in_order(results: dict) -> dict:
    """Results in the checks' order (skipped ones are known first)."""
    return {name: results[name] for name in checks() if name in results}


def main(argv: list[str] | None = None) -> int:
    parser = ToolParser(__doc__)
    parser.add_argument("--dry-cpu", action="store_true", help="the CPU stands in for the GPU, small sizes")
    parser.add_argument("--json", "--out", dest="out", metavar="FILE", type=Path, default=Path("gpu_check.json"),
                        help="the JSON report (as every benchmark calls it)")
    parser.add_argument("--work", type=Path, help="folder for shards and runs (default: a temporary one)")
    parser.add_argument("--photos", type=Path, default=Path(os.environ.get(
        "MSEG_TEST_DATA", REPO.parent / "shared" / "mseg-semantic-test-data")), help="mseg-semantic-test-data (default: $MSEG_TEST_DATA, else ../shared/...)")
    parser.add_argument("--mseg-api", type=Path, default=Path(os.environ.get(
        "MSEG_API_ROOT", REPO.parent / "shared" / "mseg-api")), help="an mseg-api checkout (default: $MSEG_API_ROOT, else ../shared/mseg-api)")
    parser.add_argument("--samples", type=at_least(0), default=0, help="photos to shard (default 48, 16 when dry)")
    parser.add_argument("--only", nargs="+", metavar="CHECK",
                        help="run only these: check names (step/bf16), a name's first part (step) or a half "
                             "(data: versions, graphs, resume, loader speed; model: steps, train, eval)")
    parser.add_argument("--deadline", type=at_least(1), metavar="SECONDS",
                        help="for the whole run: no check starts after it, and each check's time limit is cut to "
                             "what is left (checks not run are listed as such); default: none")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    parser.add_argument("--context", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one:
        return run_one(args.run_one, args.context, args.result)
    try:
        if not args.dry_cpu and not torch.cuda.is_available():
            raise UserError("no CUDA device is available: run this on a GPU machine, or with --dry-cpu")
        if not (args.photos / "demo_images").is_dir():
            raise UserError(f"--photos {args.photos}: not mseg-semantic-test-data (no demo_images/); set MSEG_TEST_DATA")
        try:
            names, skipped = select(args.only, dali_available())
        except ValueError as error:
            raise UserError(str(error)) from None
        if args.out.is_dir():
            raise UserError(f"--json {args.out} is a folder; give the report's file name, e.g. {args.out / 'gpu_check.json'}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        # Written now, and again after every check: an unwritable --out is found before minutes of checks, and
        # a run that is stopped keeps the results it had.
        write_atomic(args.out, json.dumps({"dry_cpu": args.dry_cpu, "checks": {}}, indent=1).encode())
    except USER_ERRORS as error:
        return fail(error)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        return run_checks(args, work, names, skipped)
    except USER_ERRORS as error:
        return fail(error)
    finally:
        if args.work is None:  # shards and runs of real 1080p photos: about 85 MB a run
            shutil.rmtree(work, ignore_errors=True)


def run_checks(args: argparse.Namespace, work: Path, names: list[str], skipped: dict[str, str]) -> int:
    start = time.monotonic()
    if skipped:
        print(f"NVIDIA DALI is not installed: {', '.join(skipped)} skipped (pip install -e .[dali] for CUDA 12, "
              f".[dali-cu13] for CUDA 13)", flush=True)
    print(f"preparing shards of real photos in {work} ...", flush=True)
    shards = prepare(work, args.photos, args.mseg_api, args.samples or (16 if args.dry_cpu else 48))
    ctx = Context("cpu" if args.dry_cpu else "cuda", args.dry_cpu, str(args.photos), str(shards), str(work))
    table = checks()
    results = {name: {"status": "skipped", "seconds": 0, "error": why} for name, why in skipped.items()}
    for number, name in enumerate(names, 1):
        left = args.deadline - (time.monotonic() - start) if args.deadline else None
        if left is not None and left < 5:
            results[name] = {"status": "not run", "seconds": 0,
                             "error": f"the --deadline of {args.deadline} s had passed"}
            continue
        print(f"[{number}/{len(names)}] {name} ...", end=" ", flush=True)
        command = [sys.executable, str(Path(__file__).resolve()), "--run-one", name, "--context", context_to_json(ctx),
                   "--result", str(work / "result.json")]
        limit = min(table[name].timeout_s, left) if left is not None else table[name].timeout_s
        results[name] = run_isolated(command, work / "result.json", limit)
        print(f"{results[name]['status']} ({results[name]['seconds']} s)", flush=True)
        write_atomic(args.out, json.dumps({"device": ctx.device, "dry_cpu": args.dry_cpu, "finished": False,
                                           "checks": in_order(results)}, indent=1).encode())
    results = in_order(results)
    print(f"\n{'check':<32} {'status':<8} {'s':>6}   figures")
    for name, result in results.items():
        print(f"{name:<32} {result['status']:<8} {result['seconds']:>6}   {summary(result)}")
    report = {"device": ctx.device, "dry_cpu": args.dry_cpu, "seconds": round(time.monotonic() - start, 1),
              "finished": True, "checks": results}
    write_atomic(args.out, json.dumps(report, indent=1).encode())
    failed = [n for n, r in results.items() if r["status"] not in ("ok", "skipped")]
    print(f"\nwrote {args.out}; " + (f"not ok: {', '.join(failed)}" if failed else "every check ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
