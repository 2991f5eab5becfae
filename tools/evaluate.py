"""Score a trained model with MSeg's protocol: zero-shot on test sets, on training sets, oracle, naive.

    python tools/evaluate.py --model weights/mseg-3m.pth --dataset camvid-11 kitti-19 --shards shards \
        --base-size 360 720 1080 --out results/mseg-3m
    python tools/evaluate.py --model runs/mseg-3m.pth --dataset coco-panoptic-133 --shards shards --scales ms
    torchrun --nproc_per_node 8 tools/evaluate.py --model ... # each GPU scores its part of every dataset

--model takes a training checkpoint, a release file (tools/export_weights.py) or MSeg's released models
(docs/weights.md). The ground truth comes from val shards written by tools/shard.py: test sets with
`--taxonomy self`, training sets (unrelabeled) with `--taxonomy universal`, plus `--with-relabeled` for
models trained on relabeled labels (MSeg's relabeled protocol). Writes MSeg's layout under --out
(results.txt, results.json, confusion.png per dataset, base size and scales) and the summary in MSeg's form
(summary.md, summary.json): a table per regime, the best base size per dataset, the harmonic mean.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

# Run from a checkout without `pip install`: mseg_fast is at the repository root. (Installed, this file is
# mseg_fast/tools/, whose parent holds no mseg_fast/ folder, and the package is already importable.)
if (Path(__file__).resolve().parents[1] / "mseg_fast").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mseg_fast.apiroot import find_mseg_api
from mseg_fast.clock import clock
from mseg_fast.cli import USER_ERRORS, ToolParser, at_least, device_arg, fail
from mseg_fast.data.shardset import ShardSet
from mseg_fast.errors import UserError
from mseg_fast.evaluation.protocol import plan_evaluation
from mseg_fast.evaluation.run import EvalSettings, check_shards_match, evaluate_one, model_info
from mseg_fast.evaluation.summary import summarize
from mseg_fast.models.load import load_model
from mseg_fast.train.distributed import init_distributed


def main(argv: list[str] | None = None) -> int:
    parser = ToolParser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a mseg-fast checkpoint or release file, or MSeg's")
    parser.add_argument("--dataset", nargs="+", required=True, help="test sets (camvid-11, ...) or training sets")
    parser.add_argument("--shards", type=Path, required=True, help="the shard root tools/shard.py --shards wrote")
    parser.add_argument("--base-size", type=at_least(1), nargs="+", default=[360, 720, 1080],
                        help="short sides to evaluate at; the summary takes the best per dataset, as MSeg")
    parser.add_argument("--scales", choices=("ss", "ms"), default="ss", help="single scale, or MSeg's six scales")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder (MSeg's layout, summary.md)")
    parser.add_argument("--device", type=device_arg, help="cpu or cuda (default: the rank's GPU where there is one, else cpu)")
    parser.add_argument("--crop", type=at_least(32), default=713, help="window, at least 32 (MSeg: 713)")
    parser.add_argument("--images-per-batch", type=at_least(1), default=4, help="images whose windows share batches")
    parser.add_argument("--window-batch", type=at_least(2), default=8, help="windows (mirrors included) per forward")
    parser.add_argument("--workers", type=at_least(0), default=2, help="decoding processes")
    parser.add_argument("--save-predictions", action="store_true", help="write gray/<name>.png (resumable per image)")
    parser.add_argument("--protocol", choices=("auto", "relabeled", "unrelabeled"), default="auto",
                        help="on training sets: MSeg's relabeled protocol or plain scoring; auto: relabeled for "
                             "models trained on relabeled labels (MSeg: file names with 'mseg' but not 'unrelabeled')")
    parser.add_argument("--mseg-api", help="mseg-api checkout (default: $MSEG_API_ROOT, else the installed mseg)")
    parser.add_argument("--tsv", type=Path, help="master TSV instead of mseg-api's")
    args = parser.parse_args(argv)
    try:
        info = init_distributed()  # one process, or torchrun's ranks (each scores its part of every dataset)
        # `cuda` means each rank's own GPU (torchrun); `cuda:N` that GPU; `cpu` the CPU.
        device = torch.device(args.device) if args.device == "cpu" or ":" in (args.device or "") else info.device
        say = (lambda line: print(line, flush=True)) if info.is_main else (lambda line: None)
        api_root = find_mseg_api(args.mseg_api)
        model = load_model(args.model).to(device)
        model_file = model_info(args.model, model.num_classes)
        relabeled = model_file.relabeled if args.protocol == "auto" else args.protocol == "relabeled"
        plans = [plan_evaluation(model_file.taxonomy, model.num_classes, d, api_root, args.tsv, model_file.trained_on,
                                 relabeled) for d in args.dataset]
        for plan in plans:
            if args.protocol == "relabeled" and not plan.relabeled:
                raise UserError(f"--protocol relabeled: {plan.dataset} has no relabeled labels to score against (the "
                                f"relabeled protocol applies to MSeg's training sets that have a -relabeled version, "
                                f"scored by a universal model); pass --protocol auto or unrelabeled")
        shardsets = [ShardSet.open(args.shards, p.label_taxonomy, p.dataset, "val") for p in plans]
        for plan, shardset in zip(plans, shardsets):
            check_shards_match(plan, shardset)
        settings = EvalSettings(args.scales, args.crop, args.images_per_batch, args.window_batch, args.workers,
                                args.save_predictions)
        say(f"{args.model}: {model_file.taxonomy} model, {model.num_classes} classes, on {device} x {info.world_size} "
            f"ranks; " + ", ".join(f"{p.dataset} ({p.combination}{', relabeled protocol' * p.relabeled})" for p in plans))
        records = []
        for plan, shardset in zip(plans, shardsets):
            for base in args.base_size:
                out_dir = args.out / plan.folder / str(base) / args.scales
                record = evaluate_one(model, args.model, plan, shardset, base, settings, out_dir, device, say,
                                      info.rank, info.world_size)
                reused = f", {record['reused_predictions']} saved predictions reused" if record.get("reused_predictions") else ""
                took = (f", {record['images']} images in {clock(record['seconds'])}, "
                        f"{record['images'] / max(record['seconds'], 1e-9):.2f} images/s" if record.get("seconds") else "")
                say(f"{plan.dataset} base {base} {args.scales}: mIoU {100 * record['miou']:.2f} ({out_dir / 'results.txt'}"
                    f"{reused}{took})")
                records.append(record)
        if info.is_main:
            lines = summarize(records, args.model.stem, args.scales, args.out)
            say("\n" + "\n".join(lines) + f"\n\nwrote {args.out / 'summary.md'} and {args.out / 'summary.json'}")
    except USER_ERRORS as error:
        return fail(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
