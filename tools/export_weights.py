"""Write a weights-only release file from a training checkpoint (no optimiser, no loader state).

    python tools/export_weights.py runs/mseg-3m-1080p/checkpoints/iter_00600000.pth mseg-3m.pth

The file loads with `mseg_fast.load_model(path)`; it keeps the resolved config and the taxonomy.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import torch

from mseg_fast.errors import UserError
from mseg_fast.models.load import load_model
from mseg_fast.shards.tarwriter import write_atomic
from mseg_fast.train.checkpoint import load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    try:
        saved = load(args.checkpoint)
        release = {"model": saved["model"], "config": saved.get("config"), "taxonomy": saved.get("taxonomy"),
                   "iteration": saved.get("iteration")}
        buffer = io.BytesIO()
        torch.save(release, buffer)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.out, buffer.getvalue())
        model = load_model(args.out)  # proves the file loads strictly
    except (UserError, KeyError) as error:
        print(f"error: {args.checkpoint}: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB, {model.num_classes} classes, "
          f"HRNet-W{model.width}) from {args.checkpoint} ({args.checkpoint.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
