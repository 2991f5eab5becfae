"""Generate the demo dataset tree (MSeg layout, the project's own small taxonomy).

    python tools/make_demo.py --out demo_out/demo
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a checkout without `pip install`: mseg_fast is at the repository root. (Installed, this file is
# mseg_fast/tools/, whose parent holds no mseg_fast/ folder, and the package is already importable.)
if (Path(__file__).resolve().parents[1] / "mseg_fast").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mseg_fast.cli import ToolParser, at_least
from mseg_fast.demo_data import DATASETS, TEST_DATASET, make_demo


def main(argv: list[str] | None = None) -> int:
    parser = ToolParser(__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder to write the demo tree into")
    parser.add_argument("--seed", type=at_least(0), default=0, help="seed of the generated pictures")
    args = parser.parse_args(argv)
    registry = make_demo(args.out, args.seed)
    total = sum(sum(d.counts) for d in DATASETS)
    print(f"demo tree: {total} images in {len(DATASETS)} training datasets and {TEST_DATASET.counts[1]} in the test "
          f"set {TEST_DATASET.name} under {args.out / 'data'}; "
          f"taxonomy and lists under {args.out / 'mseg-api'}; datasets registered in {registry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
