"""Pictures of augmented crops: colour overlays of labels with the names of the largest classes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mseg_fast.atomic import write_atomic
from mseg_fast.constants import IGNORE_LABEL, IMAGENET_MEAN, IMAGENET_STD


def encode_image(path: Path, array: np.ndarray) -> bytes:
    """A picture or a label map (OpenCV's channel order) encoded in the format of `path`'s suffix.

    Raises:
        OSError: it cannot be encoded (cv2.imwrite would only return False, easily unseen).
    """
    ok, data = cv2.imencode(Path(path).suffix, array)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode a {array.shape} {array.dtype} array as {Path(path).suffix}")
    return data.tobytes()


def write_image(path: Path, array: np.ndarray) -> None:
    """Write a picture or a label map (format from the suffix) atomically."""
    write_atomic(Path(path), encode_image(path, array))


def palette(num_classes: int) -> np.ndarray:
    """Distinct, stable colours per class id (golden-ratio hues); ignore is black."""
    hues = (np.arange(max(num_classes, IGNORE_LABEL + 1)) * 0.618034 % 1.0 * 180).astype(np.uint8)
    hsv = np.stack([hues, np.full_like(hues, 200), np.full_like(hues, 230)], axis=-1)[None]
    colours = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]
    colours[IGNORE_LABEL] = 0
    return colours


def denormalize(image_chw: np.ndarray) -> np.ndarray:
    """Normalised CHW float -> HWC uint8 RGB."""
    rgb = image_chw.astype(np.float32).transpose(1, 2, 0) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def largest_classes(label: np.ndarray, names: tuple[str, ...], top: int = 3) -> list[tuple[str, float]]:
    ids, counts = np.unique(label[label != IGNORE_LABEL], return_counts=True)
    order = np.argsort(-counts)[:top]
    return [(names[ids[i]] if ids[i] < len(names) else str(ids[i]), counts[i] / label.size) for i in order]


def overlay(rgb: np.ndarray, label: np.ndarray, colours: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    tinted = colours[np.minimum(label, len(colours) - 1)].astype(np.float32)
    mixed = rgb.astype(np.float32) * (1 - alpha) + tinted * alpha
    mixed[label == IGNORE_LABEL] = rgb[label == IGNORE_LABEL] * 0.4  # ignore: darkened, not coloured
    return mixed.astype(np.uint8)


def grid(tiles: list[tuple[np.ndarray, np.ndarray, str, tuple[str, ...]]], columns: int = 4, width: int = 320
         ) -> np.ndarray:
    """Tiles of (rgb, label, title, class names) with overlays and captions -> one RGB picture."""
    cells = []
    for rgb, label, title, names in tiles:
        colours = palette(len(names))
        picture = overlay(rgb, label, colours)
        height = int(round(picture.shape[0] * width / picture.shape[1]))
        picture = cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)
        caption = np.full((46, width, 3), 255, np.uint8)
        cv2.putText(caption, title[:48], (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        x = 4
        for name, share in largest_classes(label, names):
            text = f"{name} {100 * share:.0f}%"
            colour = tuple(int(c) for c in colours[names.index(name)]) if name in names else (0, 0, 0)
            cv2.rectangle(caption, (x, 27), (x + 10, 37), colour, -1)
            cv2.putText(caption, text, (x + 13, 37), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
            x += 16 + 7 * len(text)
        cells.append(np.vstack([picture, caption]))
    cell_h = max(c.shape[0] for c in cells)
    cells = [np.vstack([c, np.full((cell_h - c.shape[0], width, 3), 255, np.uint8)]) for c in cells]
    while len(cells) % columns:
        cells.append(np.full((cell_h, width, 3), 255, np.uint8))
    rows = [np.hstack(cells[i:i + columns]) for i in range(0, len(cells), columns)]
    return np.vstack(rows)


def with_legend(rgb: np.ndarray, label: np.ndarray, names: tuple[str, ...], top: int = 12) -> np.ndarray:
    """The overlay of a predicted label map with a legend strip below: the `top` largest classes, with their
    colours and shares of the picture."""
    colours = palette(len(names))
    picture = overlay(rgb, label, colours)
    width = picture.shape[1]
    entries = largest_classes(label, names, top)
    per_row = max(1, width // 230)
    rows = (len(entries) + per_row - 1) // per_row
    strip = np.full((22 * max(rows, 1) + 6, width, 3), 255, np.uint8)
    for k, (name, share) in enumerate(entries):
        x, y = 6 + (k % per_row) * 230, 18 + (k // per_row) * 22
        colour = tuple(int(c) for c in colours[names.index(name)]) if name in names else (0, 0, 0)
        cv2.rectangle(strip, (x, y - 12), (x + 14, y + 2), colour, -1)
        cv2.putText(strip, f"{name} {100 * share:.0f}%", (x + 20, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return np.vstack([picture, strip])
