"""The summary table in MSeg's form: a row per model, a column per dataset, the harmonic mean, one table per regime.

MSeg reports three tables that are never mixed: zero-shot (test sets in their own taxonomy), training datasets
(scored in universal ids) and oracle (a test set's own model). Each cell is the maximum mIoU over the base
sizes evaluated ('max' resolution), and the last column the harmonic mean over that table's datasets.
"""

from __future__ import annotations

import json
from pathlib import Path

from mseg_fast.atomic import write_set
from mseg_fast.errors import UserError
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


def model_report(records: list[dict], model: str, scales: str) -> dict:
    """One model's row in every regime it was scored in, from its records (dataset, combination, base_size,
    miou): per dataset the best mIoU over the base sizes and the figure at each, and the harmonic mean."""
    report: dict = {"model": model, "scales": scales, "base_sizes": sorted({r["base_size"] for r in records}),
                    "regimes": {}}
    for regime in REGIMES:
        ours = [r for r in records if r["combination"] == regime]
        if not ours:
            continue
        datasets = _ordered(list(dict.fromkeys(r["dataset"] for r in ours)))
        by_base = {d: {r["base_size"]: 100 * r["miou"] for r in ours if r["dataset"] == d} for d in datasets}
        best = {d: max(by_base[d].values()) for d in datasets}
        report["regimes"][regime] = {"datasets": datasets, "max_miou": best, "by_base_size": by_base,
                                     "harmonic_mean": harmonic_mean([best[d] for d in datasets])}
    return report


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def tables(reports: list[dict]) -> list[str]:
    """MSeg's tables: per regime a row per model, a column per dataset any of them was scored on."""
    scale_name = {"ss": "single scale", "ms": "multi-scale (6 scales)"}
    if len(reports) == 1:
        only = reports[0]
        lines = [f"# {only['model']}: mIoU %, {scale_name[only['scales']]}, max over base sizes "
                 f"{', '.join(map(str, only['base_sizes']))}"]
    else:
        lines = ["# mIoU %, max over each model's base sizes"]
    for regime, title in REGIMES.items():
        rows = [r for r in reports if regime in r["regimes"]]
        if not rows:
            continue
        datasets = _ordered(list(dict.fromkeys(d for r in rows for d in r["regimes"][regime]["datasets"])))
        lines += ["", f"## {title}", "", "| model | " + " | ".join(datasets) + " | h. mean |",
                  "|---|" + "---:|" * (len(datasets) + 1)]
        for report in rows:
            scored = report["regimes"][regime]
            name = report["model"] if len(reports) == 1 else (
                f"{report['model']} ({report['scales']}, base {'/'.join(map(str, report['base_sizes']))})")
            lines.append(f"| {name} | " + " | ".join(_cell(scored["max_miou"].get(d)) for d in datasets)
                         + f" | {_cell(scored['harmonic_mean'])} |")
        if len(reports) == 1:
            scored = reports[0]["regimes"][regime]
            lines += ["", "Per base size:", "", "| base size | " + " | ".join(datasets) + " |",
                      "|---:|" + "---:|" * len(datasets)]
            lines += [f"| {b} | " + " | ".join(_cell(scored["by_base_size"][d].get(b)) for d in datasets) + " |"
                      for b in reports[0]["base_sizes"]]
        if any(r["regimes"][regime]["harmonic_mean"] is None for r in rows):
            lines.append("\nh. mean: not defined where a result is missing or 0")
    return lines


def write_summary(reports: list[dict], out: Path) -> list[str]:
    """summary.md (the tables) and summary.json ({"models": [report, ...]}) under `out`, as one set."""
    lines = tables(reports)
    out.mkdir(parents=True, exist_ok=True)
    write_set({out / "summary.md": ("\n".join(lines) + "\n").encode(),
               out / "summary.json": json.dumps({"models": reports}, indent=1).encode()})
    return lines


def summarize(records: list[dict], model: str, scales: str, out: Path) -> list[str]:
    """One model's summary, written under `out`; returns its lines."""
    return write_summary([model_report(records, model, scales)], out)


def read_reports(folder: Path) -> list[dict]:
    """The model reports of a summary.json that tools/evaluate.py (or tools/summarize.py) wrote in `folder`."""
    path = folder / "summary.json"
    try:
        models = json.loads(path.read_text(encoding="utf-8"))["models"]
        for report in models:
            for scored in report["regimes"].values():  # JSON made the base sizes strings
                scored["by_base_size"] = {d: {int(b): v for b, v in sizes.items()}
                                          for d, sizes in scored["by_base_size"].items()}
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; give folders that tools/evaluate.py --out wrote") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(f"{path}: not a summary written by tools/evaluate.py ({type(error).__name__}: {error}); "
                        f"evaluate again into that folder") from None
    return models
