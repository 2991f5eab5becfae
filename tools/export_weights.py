"""Write a weights-only release file from a training checkpoint (no optimiser, no loader state).

    python tools/export_weights.py runs/mseg-3m-1080p/checkpoints/iter_00600000.pth mseg-3m.pth

The file loads with `mseg_fast.load_model(path)`; it keeps the resolved config and the taxonomy.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import torch

# Run from a checkout without `pip install`: mseg_fast is at the repository root. (Installed, this file is
# mseg_fast/tools/, whose parent holds no mseg_fast/ folder, and the package is already importable.)
if (Path(__file__).resolve().parents[1] / "mseg_fast").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mseg_fast.cli import USER_ERRORS, ToolParser, fail
from mseg_fast.errors import UserError
from mseg_fast.models.load import load_model
from mseg_fast.atomic import write_atomic
from mseg_fast.train.checkpoint import load


def main(argv: list[str] | None = None) -> int:
    parser = ToolParser(__doc__)
    parser.add_argument("checkpoint", type=Path, help="a training checkpoint (checkpoints/iter_*.pth)")
    parser.add_argument("out", type=Path, help="the release file to write")
    args = parser.parse_args(argv)
    try:
        if args.out.is_dir():
            raise UserError(f"{args.out} is a folder; give the release file's name, e.g. {args.out / 'model.pth'}")
        if args.out.exists() and args.checkpoint.exists() and args.out.samefile(args.checkpoint):
            raise UserError(f"{args.out} is the checkpoint itself: writing the release file over it would lose the "
                            f"optimizer and loader state a resume needs; give another name, e.g. "
                            f"{args.out.with_name(args.out.stem + '-release.pth')}")
        saved = load(args.checkpoint)
        model = load_model(args.checkpoint)  # proves the weights load strictly, before anything is written
        release = {"model": saved["model"], "config": saved.get("config"), "taxonomy": saved.get("taxonomy"),
                   "iteration": saved.get("iteration")}
        buffer = io.BytesIO()
        torch.save(release, buffer)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.out, buffer.getvalue())  # a temporary name, removed if the write fails
    except USER_ERRORS as error:
        return fail(error)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB, {model.num_classes} classes, "
          f"{type(model).__name__}) from {args.checkpoint} ({args.checkpoint.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
