"""The main job on built-in demo data, end to end, as a user would run it.

    python tools/demo.py --out demo_out

Steps (each a real command, echoed before it runs): generate the demo tree, shard every
demo dataset (train and val) with labels converted to the demo's universal taxonomy,
verify the shards, summarise the manifests, picture a mixed batch of augmented crops
(show_batch), benchmark the loaders (bench_loader), train HRNet-W18 briefly on the CPU, and evaluate it
with MSeg's protocol (zero-shot on a generated test set with its own taxonomy, and on a training set),
predict on two of its photos, and list what to open.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

# Run from a checkout without `pip install`: mseg_fast is at the repository root. (Installed, this file is
# mseg_fast/tools/, whose parent holds no mseg_fast/ folder, and the package is already importable.)
if (Path(__file__).resolve().parents[1] / "mseg_fast").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mseg_fast.cli import ToolParser, at_least
from mseg_fast.config import shipped_recipes
from mseg_fast.demo_data import DATASETS, TEST_DATASET
from mseg_fast.shards.report import describe

TOOLS = Path(__file__).resolve().parent
CONFIG = shipped_recipes() / "demo" / "tiny.yaml"
TRAIN_CONFIG = shipped_recipes() / "demo" / "train-demo.yaml"


def run(command: list[str], spent: dict[str, float]) -> None:
    """Echo a step, run it, and add its seconds to its tool's (the demo ends with where its time went)."""
    print(f"\n$ {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    tool = Path(command[1]).stem
    spent[tool] = spent.get(tool, 0.0) + time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = ToolParser(__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="folder for everything the demo writes")
    parser.add_argument("--workers", type=at_least(1), default=2, help="processes for sharding and loading")
    args = parser.parse_args(argv)
    demo, shards = args.out / "demo", args.out / "shards"
    spent: dict[str, float] = {}
    python = sys.executable
    run([python, str(TOOLS / "make_demo.py"), "--out", str(demo)], spent)
    common = ["--data-root", str(demo / "data"), "--mseg-api", str(demo / "mseg-api"),
              "--extra-datasets", str(demo / "datasets.yaml"), "--out", str(shards),
              "--workers", str(args.workers), "--samples-per-shard", "8"]
    for dataset in DATASETS:
        for split in ("train", "val"):
            run([python, str(TOOLS / "shard.py"), "--dataset", dataset.name, "--split", split, *common], spent)
    for dataset in DATASETS:
        run([python, str(TOOLS / "shard.py"), "--dataset", dataset.name, "--split", "train", "--verify",
             "--extra-datasets", str(demo / "datasets.yaml"), "--out", str(shards)], spent)
    print("\nShards written (manifest summaries):")
    for dataset in DATASETS:
        print(describe(shards / "universal" / dataset.name))
    run([python, str(TOOLS / "show_batch.py"), str(CONFIG), "--shards", str(shards), "--out", str(args.out / "batch"),
         "--n", "12"], spent)
    run([python, str(TOOLS / "bench_loader.py"), str(CONFIG), "--shards", str(shards), "--iters", "10",
         "--json", str(args.out / "bench_loader.json")], spent)
    run([python, str(TOOLS / "train.py"), str(TRAIN_CONFIG), f"shards={shards}",
         f"save_path={args.out / 'run'}"], spent)
    # Zero-shot: a test set the model never saw, in a taxonomy of its own, through the demo TSV's column.
    run([python, str(TOOLS / "shard.py"), "--dataset", TEST_DATASET.name, "--split", "val", "--taxonomy", "self",
         *common], spent)
    release = args.out / "demo-model.pth"
    checkpoints = args.out / "run" / "checkpoints"
    final = json.loads((checkpoints / "latest.json").read_text())["file"]  # the run's last iteration
    run([python, str(TOOLS / "export_weights.py"), str(checkpoints / final), str(release)], spent)
    run([python, str(TOOLS / "evaluate.py"), "--model", str(release), "--dataset", TEST_DATASET.name, "demo-streets",
         "--shards", str(shards), "--mseg-api", str(demo / "mseg-api"), "--base-size", "120", "180", "--crop", "89",
         "--workers", "1", "--out", str(args.out / "results")], spent)
    photos = sorted((demo / "data" / TEST_DATASET.root / "images" / "val").glob("*.jpg"))[:2]
    run([python, str(TOOLS / "predict.py"), "--model", str(release), *map(str, photos), "--taxonomy", TEST_DATASET.name,
         "--mseg-api", str(demo / "mseg-api"), "--base-size", "180", "--crop", "89", "--device", "cpu",
         "--out", str(args.out / "predictions")], spent)
    print("\nwhere the demo's time went: " + ", ".join(f"{step} {seconds:.0f} s" for step, seconds in spent.items())
          + f"; {sum(spent.values()):.0f} s in all")
    shown = [(args.out / "batch" / "grid.png", "the augmented crops of a mixed batch, labels overlaid"),
             (args.out / "run" / "train.log", "the training log (loss per dataset, rate, ETA, validation mIoU)"),
             (args.out / "run" / "tensorboard", f"curves: tensorboard --logdir {args.out / 'run' / 'tensorboard'}"),
             (args.out / "results" / "summary.md", "the evaluation summary in MSeg's form (evaluate.py printed it above)"),
             (args.out / "results" / TEST_DATASET.name / "180" / "ss" / "confusion.png", "a confusion matrix"),
             (args.out / "predictions" / f"{photos[0].stem}_overlay.jpg", "a prediction on a photo, with its legend")]
    print("Open:")
    for path, what in shown:
        print(f"  {path}  {what}" + ("" if path.exists() else "  (missing!)"))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as error:
        print(f"demo step failed (exit {error.returncode}): {shlex.join(error.cmd)}", file=sys.stderr)
        sys.exit(1)
