"""The summary table in MSeg's form: a row per model, a column per dataset, the harmonic mean, one table per regime.

MSeg reports three tables that are never mixed: zero-shot (test sets in their own taxonomy), training datasets
(scored in universal ids) and oracle (a test set's own model). Each cell is the maximum mIoU over the base
sizes evaluated ('max' resolution), and the last column the harmonic mean over that table's datasets.
"""

from __future__ import annotations

import json
from pathlib import Path

from mseg_fast.atomic import write_set
from mseg_fast.eval.mseg_metrics import harmonic_mean

# MSeg's column order (its README and paper); other datasets follow in the order given.
_ORDER = ["voc2012", "pascal-context-60", "camvid-11", "wilddash-19", "kitti-19", "scannet-20",
          "coco-panoptic-133", "ade20k-150", "mapillary-public65", "idd-39", "bdd", "cityscapes-19", "sunrgbd-37"]
REGIMES = {"zero-shot": "Zero-shot (test sets, in their own taxonomy)",
           "naive": "Zero-shot, naive-merge model (test sets, through exact class names)",
           "universal": "Training datasets (val, in universal ids)",
           "oracle": "Oracle (the test set's own model)"}


def _ordered(datasets: list[str]) -> list[str]:
    known = [d for d in _ORDER if d in datasets]
    return known + [d for d in datasets if d not in known]


def _table(model: str, datasets: list[str], cells: dict[str, float | None], mean: float | None) -> list[str]:
    row = [f"{cells[d]:.1f}" if cells[d] is not None else "-" for d in datasets]
    return ["| model | " + " | ".join(datasets) + " | h. mean |",
            "|---|" + "---:|" * (len(datasets) + 1),
            f"| {model} | " + " | ".join(row) + f" | {mean:.1f} |" if mean is not None else
            f"| {model} | " + " | ".join(row) + " | - |"]


def summarize(records: list[dict], model: str, scales: str, out: Path) -> list[str]:
    """Table lines for one model's records (dataset, combination, base_size, miou), also written as
    summary.md and summary.json under `out`."""
    bases = sorted({r["base_size"] for r in records})
    scale_name = {"ss": "single scale", "ms": "multi-scale (6 scales)"}[scales]
    lines = [f"# {model}: mIoU %, {scale_name}, max over base sizes {', '.join(map(str, bases))}"]
    report: dict = {"model": model, "scales": scales, "base_sizes": bases, "regimes": {}}
    for regime, title in REGIMES.items():
        ours = [r for r in records if r["combination"] == regime]
        if not ours:
            continue
        datasets = _ordered(list(dict.fromkeys(r["dataset"] for r in ours)))
        by_base = {d: {r["base_size"]: 100 * r["miou"] for r in ours if r["dataset"] == d} for d in datasets}
        best = {d: max(by_base[d].values()) if by_base[d] else None for d in datasets}
        mean = harmonic_mean([best[d] for d in datasets])
        lines += ["", f"## {title}", "", *_table(model, datasets, best, mean), "", "Per base size:", "",
                  "| base size | " + " | ".join(datasets) + " |", "|---:|" + "---:|" * len(datasets)]
        lines += [f"| {b} | " + " | ".join(f"{by_base[d][b]:.1f}" if b in by_base[d] else "-" for d in datasets) + " |"
                  for b in bases]
        if mean is None:
            lines.append("\nh. mean: not defined (a result is missing or 0)")
        report["regimes"][regime] = {"datasets": datasets, "max_miou": best, "by_base_size": by_base,
                                     "harmonic_mean": mean}
    out.mkdir(parents=True, exist_ok=True)
    write_set({out / "summary.md": ("\n".join(lines) + "\n").encode(),
               out / "summary.json": json.dumps(report, indent=1).encode()})
    return lines
