"""Time evaluation: the inference core of tools/evaluate.py against an MSeg-style evaluator, one run.

    python tools/bench_eval.py --json bench_out/eval.json [--arch hrnet_w18] [--base-size 360] [--crop 353]

Real photos from mseg-semantic-test-data ($MSEG_TEST_DATA) with COCO label maps scaled to them, one
network (unless --model, a random one plus a colour classifier, so that its predictions have a photo's
class boundaries), both evaluators; prints images/s, the share of time outside
the forward passes, and how far their predictions and mIoU agree.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

# Run from a checkout without `pip install`: mseg_fast is at the repository root. (Installed, this file is
# mseg_fast/tools/, whose parent holds no mseg_fast/ folder, and the package is already importable.)
if (Path(__file__).resolve().parents[1] / "mseg_fast").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mseg_fast.bench.eval_bench import ColourClasses, run_eval_bench
from mseg_fast.bench.shard_bench import LABEL_MAPS
from mseg_fast.cli import USER_ERRORS, ToolParser, at_least, default_device, device_arg, fail
from mseg_fast.errors import UserError
from mseg_fast.eval.inference import InferenceSpec
from mseg_fast.models.factory import build_model
from mseg_fast.models.load import load_model

REPO = Path(__file__).resolve().parent.parent


def photos(root: Path, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    paths = sorted((root / "demo_images").glob("*.jpg")) + sorted((root / "RealEstate10k_Example").glob("*.jpg"))
    if not paths:
        raise UserError(f"--photos {root}: no photos (demo_images/, RealEstate10k_Example/); set MSEG_TEST_DATA")
    images, labels = [], []
    for k in range(count):
        image = cv2.imread(str(paths[k % len(paths)]))[:, :, ::-1].copy()
        label = cv2.imread(str(root / LABEL_MAPS[k % len(LABEL_MAPS)]), cv2.IMREAD_UNCHANGED)
        images.append(image)
        labels.append(cv2.resize(label, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST))
    return images, labels


def main(argv: list[str] | None = None) -> int:
    parser = ToolParser(__doc__)
    parser.add_argument("--model", type=Path, help="weights to time (default: a random network of --arch)")
    parser.add_argument("--arch", default="hrnet_w18", choices=("hrnet_w18", "hrnet_w48"), help="network without --model")
    parser.add_argument("--images", type=at_least(1), default=12, help="photos to evaluate")
    parser.add_argument("--base-size", type=at_least(1), default=360, help="short side the photos are resized to")
    parser.add_argument("--crop", type=at_least(32), default=353,
                        help="window, at least 32 (MSeg: 713; smaller for CPU runs)")
    parser.add_argument("--images-per-batch", type=at_least(1), default=4, help="images whose windows share batches")
    parser.add_argument("--window-batch", type=at_least(2), default=8, help="windows (mirrors included) per forward")
    parser.add_argument("--device", type=device_arg, default=default_device(), help="cpu, cuda or cuda:N")
    parser.add_argument("--photos", type=Path, default=Path(os.environ.get(
        "MSEG_TEST_DATA", REPO.parent / "shared" / "mseg-semantic-test-data")),
        help="mseg-semantic-test-data (default: $MSEG_TEST_DATA, else ../shared/mseg-semantic-test-data)")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    try:
        device = torch.device(args.device)
        torch.manual_seed(0)
        model = load_model(args.model) if args.model else ColourClasses(build_model(args.arch, 194)).eval()
        model = model.to(device)
        images, labels = photos(args.photos, args.images)
        spec = InferenceSpec(args.base_size, (1.0,), args.crop, args.window_batch)
        result = run_eval_bench(model, images, labels, spec, args.images_per_batch, device)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            machine = {"device": str(device), "cpus": os.cpu_count(),
                       "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
            settings = {"images": args.images, "base_size": args.base_size, "crop": args.crop, "arch": args.arch,
                        "images_per_batch": args.images_per_batch, "window_batch": args.window_batch}
            args.json.write_text(json.dumps({"machine": machine, "settings": settings, **result}, indent=1))
    except USER_ERRORS as error:
        return fail(error)
    print(f"\n{args.images} photos, base {args.base_size}, crop {args.crop}, {args.arch}, {device}")
    print(f"{'evaluator':<11} {'images/s':>9} {'outside forward':>16} {'forwards':>9} {'mIoU':>8}")
    for name, run in result["runs"].items():
        print(f"{name:<11} {run['images_per_s']:>9} {100 * run['outside_forward_share']:>15.1f}% "
              f"{run['forward_calls']:>9} {run['miou']:>8}")
    print(f"speed-up {result['speedup']}x; predictions agree on {100 * result['pixel_agreement']:.3f} % of pixels "
          f"(worst image {100 * result['worst_image_agreement']:.3f} %); mIoU differs by {result['miou_difference']} "
          f"points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
