"""Generate the demo dataset tree (MSeg layout, the project's own small taxonomy).

    python tools/make_demo.py --out demo_out/demo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# A plain checkout (no pip install) finds mseg_fast and pipelines at the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mseg_fast.demo_data import DATASETS, TEST_DATASET, make_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the demo tree into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    registry = make_demo(args.out, args.seed)
    total = sum(sum(d.counts) for d in DATASETS)
    print(f"demo tree: {total} images in {len(DATASETS)} training datasets and {TEST_DATASET.counts[1]} in the test "
          f"set {TEST_DATASET.name} under {args.out / 'data'}; "
          f"taxonomy and lists under {args.out / 'mseg-api'}; datasets registered in {registry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
