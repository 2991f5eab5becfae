"""Training-step benchmark: samples/s with real batches and with synthetic in-memory ones, peak memory.

    python tools/bench_step.py config/bench/1080.yaml batch_size=2 [--iters 3] [--json FILE] [key=value ...]

Runs on the GPU where there is one, else on the CPU.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

# Run from a checkout without `pip install`: mseg_fast is at the repository root. (Installed, this file is
# mseg_fast/tools/, whose parent holds no mseg_fast/ folder, and the package is already importable.)
if (Path(__file__).resolve().parents[1] / "mseg_fast").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mseg_fast.bench.step_bench import run_steps
from mseg_fast.config import load_config
from mseg_fast.cli import USER_ERRORS, ToolParser, at_least, fail


def main(argv: list[str] | None = None) -> int:
    parser = ToolParser(__doc__)
    parser.add_argument("config", help="a config file, or a shipped recipe (bench/1080)")
    parser.add_argument("--iters", type=at_least(1), default=3, help="timed steps per kind of batch")
    parser.add_argument("--warmup", type=at_least(0), default=1, help="untimed steps first")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_intermixed_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        config = load_config(args.config, args.overrides)
        runs = [run_steps(config, real, args.iters, args.warmup, device) for real in (False, True)]
    except USER_ERRORS as error:
        return fail(error)
    print(f"\n{config.arch}, crop {config.train_h}x{config.train_w}, batch {runs[0]['batch']}, {config.precision}, "
          f"{device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'})")
    print(f"{'batches':<10} {'samples/s':>9} {'s/step':>7} {'data wait':>9} {'peak GiB':>8}")
    for run in runs:
        print(f"{run['batches']:<10} {run['samples_per_s']:>9} {run['step_s']:>7} {100 * run['data_wait_share']:>8.0f}% "
              f"{run['peak_memory_gib']:>8}")
    exposed = 1 - runs[1]["samples_per_s"] / runs[0]["samples_per_s"]
    print(f"exposed data wait: {100 * exposed:.0f}% of the synthetic-batch rate")
    if args.json:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"runs": runs, "exposed_data_wait": round(exposed, 3)}, indent=1))
        except OSError as error:
            return fail(error)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
