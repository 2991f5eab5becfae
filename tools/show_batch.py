"""Write augmented training crops as pictures, to see what the model will see.

    python tools/show_batch.py CONFIG --shards DIR --out DIR [--n 16] [key=value ...]

Writes NNNN_image.png (denormalised RGB), NNNN_label.png (label ids as stored, 255 = ignore),
samples.json (source image and the parameters drawn, per crop) and grid.png (all crops with
a colour overlay of the labels and the names of their largest classes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

# Run from a checkout without `pip install`: mseg_fast is at the repository root. (Installed, this file is
# mseg_fast/tools/, whose parent holds no mseg_fast/ folder, and the package is already importable.)
if (Path(__file__).resolve().parents[1] / "mseg_fast").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mseg_fast.config import load_config
from mseg_fast.data.geometry import describe
from mseg_fast.data.shardset import ShardSet
from mseg_fast.cli import USER_ERRORS, ToolParser, at_least, default_device, device_arg, fail
from mseg_fast.loader import augment_of, choose_backend, sample_crops
from mseg_fast.viz import denormalize, grid, write_image


def write_pictures(out: Path, crops: list[dict], aug, names: dict, backend: str, device: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    records, tiles = [], []
    for number, crop in enumerate(crops):
        rgb = denormalize(crop["image"])
        label = crop["label"].astype(np.uint16 if crop["label"].max() > 255 else np.uint8)
        write_image(out / f"{number:04d}_image.png", rgb[:, :, ::-1])
        write_image(out / f"{number:04d}_label.png", label)
        height, width = crop["meta"]["size"]
        records.append({"crop": number, "dataset": crop["dataset"], "image": crop["meta"]["image"],
                        "label": crop["meta"]["label"], "list_line": crop["meta"]["line"],
                        "source_size": [height, width], "params": describe(height, width, crop["draws"], aug)})
        title = f"{number}: {crop['dataset']} {Path(crop['meta']['image']).name}"
        tiles.append((rgb, label, title, names[crop["dataset"]]))
    (out / "samples.json").write_text(json.dumps({"backend": backend, "device": device, "crops": records}, indent=1))
    write_image(out / "grid.png", grid(tiles)[:, :, ::-1])


def main(argv: list[str] | None = None) -> int:
    parser = ToolParser(__doc__)
    parser.add_argument("config", help="a config file, or a shipped recipe (1080/mseg-3m)")
    parser.add_argument("--shards", help="shard root (overrides the config's `shards`)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the pictures")
    parser.add_argument("--n", type=at_least(1), default=16, help="how many crops")
    parser.add_argument("--device", type=device_arg, default=default_device(), help="cpu, or cuda[:N] to run the DALI GPU graph")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_intermixed_args(argv)  # key=value may come before or after the options
    try:
        overrides = args.overrides + ([f"shards={args.shards}"] if args.shards else [])
        config = load_config(args.config, overrides)
        crops = sample_crops(config, args.n, args.device)
        backend = choose_backend(config, args.device)
        aug = augment_of(config, train=True)
        names = {d: ShardSet.open(config.shards, config.taxonomy(), d, "train").class_names for d in config.dataset}
        write_pictures(args.out, crops, aug, names, backend, args.device)
    except USER_ERRORS as error:
        return fail(error)
    print(f"wrote {len(crops)} crops ({backend} loader on {args.device}) to {args.out}: grid.png, samples.json, "
          f"NNNN_image.png, NNNN_label.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
