"""Loader throughput, side by side: DALI, the torch fallback, an MSeg-style loader, decode alone.

    python tools/bench_loader.py CONFIG --shards DIR [--backend dali torch mseg decode] [--iters N]
                                 [--json FILE] [key=value ...]

Prints a table and writes JSON ({"runs": [{"backend", "samples_per_s", ...}]}).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

# Run from a checkout without `pip install`: mseg_fast is at the repository root. (Installed, this file is
# mseg_fast/tools/, whose parent holds no mseg_fast/ folder, and the package is already importable.)
if (Path(__file__).resolve().parents[1] / "mseg_fast").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mseg_fast.bench.loader_bench import run_backend
from mseg_fast.config import load_config
from mseg_fast.cli import USER_ERRORS, ToolParser, at_least, default_device, device_arg, fail
from mseg_fast.loader import dali_available

BACKENDS = ("dali", "torch", "mseg", "decode")


def median_run(results: list[dict]) -> dict:
    """The round with the median samples/s, with every round's rate kept."""
    ordered = sorted(results, key=lambda r: r["samples_per_s"])
    return {**ordered[len(ordered) // 2], "rounds_samples_per_s": [r["samples_per_s"] for r in results]}


def slower_notes(runs: list[dict], config) -> list[str]:
    """Why a backend of ours is slower than the MSeg-style loader, where one is (small images)."""
    mseg = next((r for r in runs if r["backend"] == "mseg"), None)
    notes = []
    for run in runs:
        if mseg is None or run["backend"] not in ("dali", "torch") or run["samples_per_s"] >= mseg["samples_per_s"]:
            continue
        stages = run.get("stages_ms_per_sample", {})
        where = ("DALI's CPU operators, a graph built for the GPU, have" if run["backend"] == "dali"
                 else "the fallback's workers have")
        notes.append(f"note: {run['backend']} is below the MSeg-style loader here: on images of short side "
                     f"{config.short_size} MSeg's full-image chain has little to do, while {where} a fixed cost per "
                     f"sample and per operator that small images do not amortise (augment "
                     f"{stages.get('augment')} ms per sample). On 1080p photos (config/bench/1080.yaml) it is ahead.")
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = ToolParser(__doc__)
    parser.add_argument("config", help="a config file, or a shipped recipe (bench/1080)")
    parser.add_argument("--shards", help="shard root (overrides the config's `shards`)")
    parser.add_argument("--backend", nargs="+", choices=BACKENDS, help="default: all (dali only where installed)")
    parser.add_argument("--iters", type=at_least(1), default=20, help="timed batches per backend")
    parser.add_argument("--warmup", type=at_least(0), default=10,
                        help="untimed batches first (default 10: the fallback's workers map each shared-memory batch "
                             "slot once, in their first batches, and start-up is not what training sees)")
    parser.add_argument("--repeat", type=at_least(1), default=1,
                        help="time the backends this many times, interleaved, and report the median (noisy machines)")
    parser.add_argument("--device", type=device_arg, default=default_device(), help="where batches go: cpu, or cuda[:N] to time host->device copies too")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_intermixed_args(argv)
    backends = args.backend or [b for b in BACKENDS if b != "dali" or dali_available()]
    try:
        config = load_config(args.config, args.overrides + ([f"shards={args.shards}"] if args.shards else []))
        rounds: dict[str, list[dict]] = {b: [] for b in backends}
        for round_number in range(args.repeat):
            for backend in backends:
                print(f"timing {backend} (round {round_number + 1}/{args.repeat}) ...", flush=True)
                rounds[backend].append(run_backend(config, backend, args.iters, args.warmup, args.device))
        runs = [median_run(rounds[b]) for b in backends]
    except USER_ERRORS as error:
        return fail(error)
    mseg = next((r["samples_per_s"] for r in runs if r["backend"] == "mseg"), None)
    print(f"\n{', '.join(config.dataset)}, crop {config.train_h}x{config.train_w}, short side {config.short_size}, "
          f"{runs[0]['workers']} workers, {os.cpu_count()} cores")
    print(f"{'backend':<8} {'samples/s':>9} {'vs mseg':>8} {'p50 ms':>8} {'p99 ms':>8}   stages (ms/sample)")
    for run in runs:
        ratio = f"{run['samples_per_s'] / mseg:.2f}x" if mseg else "-"
        stages = ", ".join(f"{k} {v}" for k, v in run.get("stages_ms_per_sample", {}).items()
                           if k != "note" and v is not None)
        print(f"{run['backend']:<8} {run['samples_per_s']:>9} {ratio:>8} {run['p50_ms']:>8} {run['p99_ms']:>8}   {stages}")
    for line in slower_notes(runs, config):
        print(line)
    if args.json:
        machine = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(), "device": args.device}
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"machine": machine, "config": str(args.config), "runs": runs}, indent=1))
        except OSError as error:
            return fail(error)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
