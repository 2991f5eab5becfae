#!/usr/bin/env python3
"""One table of several models, in MSeg's form, from the summaries tools/evaluate.py wrote.

    python tools/summarize.py results/mseg-3m results/mseg-1m results/mseg-unrelabeled-1m --out results/table

Each folder is one `tools/evaluate.py --out`. Writes OUT/summary.md and OUT/summary.json: per regime
(zero-shot, training datasets, oracle) a row per model, a column per dataset, the harmonic mean; each row
names its scales and base sizes, since MSeg's 'max' figure depends on both.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a checkout without `pip install`: mseg_fast is at the repository root. (Installed, this file is
# mseg_fast/tools/, whose parent holds no mseg_fast/ folder, and the package is already importable.)
if (Path(__file__).resolve().parents[1] / "mseg_fast").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mseg_fast.cli import USER_ERRORS, ToolParser, fail
from mseg_fast.errors import UserError
from mseg_fast.evaluation.summary import read_reports, write_summary


def main(argv: list[str] | None = None) -> int:
    parser = ToolParser(__doc__)
    parser.add_argument("results", nargs="+", type=Path, help="folders tools/evaluate.py --out wrote")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the combined summary")
    args = parser.parse_args(argv)
    try:
        if any(args.out.resolve() == folder.resolve() for folder in args.results):
            raise UserError(f"--out {args.out} is one of the inputs: its own summary would be replaced; "
                            f"give another folder")
        reports, seen = [], {}
        for folder in args.results:
            for report in read_reports(folder):
                key = (report["model"], report["scales"], tuple(report["base_sizes"]))
                if key in seen:
                    raise UserError(f"{folder} and {seen[key]} both hold {report['model']} ({report['scales']}, "
                                    f"base sizes {list(report['base_sizes'])}): give one of them")
                seen[key] = folder
                reports.append(report)
        lines = write_summary(reports, args.out)
    except USER_ERRORS as error:
        return fail(error)
    print("\n".join(lines) + f"\n\nwrote {args.out / 'summary.md'} and {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
