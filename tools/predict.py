"""Predict label maps for pictures people look at: images, a folder or a video -> grey id PNGs and colour
overlays with a legend, in the model's taxonomy or projected onto a dataset's (e.g. camvid-11).

    python tools/predict.py --model weights/mseg-3m.pth PHOTO.jpg ... --out predictions [--taxonomy camvid-11]
    python tools/predict.py --model weights/mseg-3m.pth --folder DIR --out predictions [--base-size 720] [--scales ms]
    python tools/predict.py --model weights/mseg-3m.pth --video clip.mp4 --out predictions

Single scale by default (MSeg's demo defaulted to six scales: minutes per image on a CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

# Run from a checkout without `pip install`: mseg_fast is at the repository root. (Installed, this file is
# mseg_fast/tools/, whose parent holds no mseg_fast/ folder, and the package is already importable.)
if (Path(__file__).resolve().parents[1] / "mseg_fast").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mseg_fast.apiroot import find_mseg_api, master_tsv_path
from mseg_fast.cli import USER_ERRORS, ToolParser, at_least, default_device, device_arg, fail
from mseg_fast.errors import SampleError, UserError
from mseg_fast.eval.inference import MULTI_SCALE, InferenceSpec, predict_labels
from mseg_fast.evaluation.protocol import plan_evaluation
from mseg_fast.evaluation.run import model_info
from mseg_fast.models.load import load_model
from mseg_fast.shards.codecs import probe_image
from mseg_fast.taxonomy import read_master_tsv, universal_names
from mseg_fast.viz import with_legend, write_image

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def inputs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(output name, path) of every input image, checked before any work: a folder's images keep their
    sub-folders under --out (two `0001.jpg` in different folders stay two predictions), given paths their stem;
    two inputs that would write the same files are refused, not overwritten."""
    named = [(path.stem, path) for path in args.images]
    if args.folder:
        if not args.folder.is_dir():
            raise UserError(f"--folder {args.folder}: " + ("is a file; pass it without --folder, as an image path"
                                                           if args.folder.is_file() else "no such folder"))
        folder, out = args.folder.resolve(), args.out.resolve()
        if out == folder or folder in out.parents:
            raise UserError(f"--out {args.out} is inside --folder {args.folder}: a rerun would predict its own "
                            f"outputs; write them somewhere else")
        found = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        if not found:
            raise UserError(f"--folder {args.folder}: no images ({', '.join(IMAGE_EXTS)}) in it or its sub-folders")
        named += [(p.relative_to(args.folder).with_suffix("").as_posix(), p) for p in found]
    first: dict[str, Path] = {}
    for name, path in named:
        if name in first:
            raise UserError(f"{first[name]} and {path} would both be written as {args.out / name}_gray.png: rename "
                            f"one, or put them in sub-folders of one --folder")
        first[name] = path
    for _, path in named:
        if not path.is_file():
            raise UserError(f"{path}: no such image file")
    return named


def read_image(path: Path) -> np.ndarray:
    """An input as RGB, a truncated or corrupt JPEG or PNG refused (OpenCV would fill the missing part grey)."""
    data = path.read_bytes()  # read once: checked, then decoded from these bytes
    if path.suffix.lower() != ".bmp":
        try:
            probe_image(data, str(path))
        except SampleError as error:
            raise UserError(f"{path}: {error.problem}; re-download or re-export it, or leave it out") from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # EXIF orientation applied, as imread
    if image is None:
        raise UserError(f"{path}: not an image OpenCV can read")
    return image[:, :, ::-1].copy()


def frames(args: argparse.Namespace, named: list[tuple[str, Path]]):
    """(name, RGB image) of every input."""
    for name, path in named:
        yield name, read_image(path)
    if args.video:
        capture = cv2.VideoCapture(str(args.video))
        if not capture.isOpened():
            raise UserError(f"{args.video}: not a video OpenCV can read")
        number = 0
        while (frame := capture.read())[0]:
            yield f"{args.video.stem}_{number:06d}", frame[1][:, :, ::-1].copy()
            number += 1
        capture.release()


def main(argv: list[str] | None = None) -> int:
    parser = ToolParser(__doc__)
    parser.add_argument("images", nargs="*", type=Path, help="photos to predict (or --folder, --video)")
    parser.add_argument("--model", type=Path, required=True, help="a mseg-fast checkpoint or release file, or MSeg's")
    parser.add_argument("--folder", type=Path, help="every image under this folder (sub-folders kept under --out)")
    parser.add_argument("--video", type=Path, help="a video: every frame")
    parser.add_argument("--out", type=Path, required=True, help="output folder: NAME_gray.png (class ids) and NAME_overlay.jpg (colours, legend)")
    parser.add_argument("--taxonomy", help="project onto this dataset's classes (a test set, e.g. camvid-11)")
    parser.add_argument("--base-size", type=at_least(1), default=720, help="short side the images are resized to")
    parser.add_argument("--scales", choices=("ss", "ms"), default="ss", help="single scale, or MSeg's six scales")
    parser.add_argument("--crop", type=at_least(32), default=713, help="window (MSeg's 713; at least 32)")
    parser.add_argument("--device", type=device_arg, default=default_device(), help="cpu, cuda or cuda:N")
    parser.add_argument("--mseg-api", help="mseg-api checkout (class names, TSV)")
    args = parser.parse_args(argv)
    try:
        if not (args.images or args.folder or args.video):
            raise UserError("nothing to predict: give image paths, --folder DIR or --video FILE")
        if args.video and not args.video.is_file():
            raise UserError(f"--video {args.video}: no such file")
        named = inputs(args)
        device = torch.device(args.device)
        model = load_model(args.model).to(device)
        info, api_root = model_info(args.model, model.num_classes), find_mseg_api(args.mseg_api)
        projection = None
        if args.taxonomy:
            plan = plan_evaluation(info.taxonomy, model.num_classes, args.taxonomy, api_root, trained_on=info.trained_on)
            names = plan.class_names
            projection = torch.from_numpy(plan.projection).to(device) if plan.projection is not None else None
        elif info.taxonomy == "universal":
            names = universal_names(read_master_tsv(master_tsv_path(api_root)))
        else:
            raise UserError(f"a {info.taxonomy} model's classes need a name: pass --taxonomy DATASET")
        spec = InferenceSpec(args.base_size, MULTI_SCALE if args.scales == "ms" else (1.0,), args.crop)
        print(f"{args.model}: {info.taxonomy} model -> {args.taxonomy or 'universal'} ({len(names)} classes) on {device}",
              flush=True)
        start, count = time.perf_counter(), 0
        for name, image in frames(args, named):
            label = predict_labels(model, [torch.from_numpy(image).to(device)], spec, projection)[0].cpu().numpy()
            (args.out / name).parent.mkdir(parents=True, exist_ok=True)  # at the first write: refusals leave nothing
            write_image(args.out / f"{name}_gray.png", label.astype(np.uint8 if len(names) <= 256 else np.uint16))
            write_image(args.out / f"{name}_overlay.jpg", with_legend(image, label, tuple(names))[:, :, ::-1])
            count += 1
            print(f"{name}: {count} images, {count / (time.perf_counter() - start):.2f} images/s", flush=True)
    except USER_ERRORS as error:
        return fail(error)
    print(f"wrote {count} predictions (NAME_gray.png, NAME_overlay.jpg) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
