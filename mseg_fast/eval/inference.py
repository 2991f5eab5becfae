"""The inference core: whole images in, class probabilities at each image's original size out.

MSeg's semantics (MSEG_REFERENCE.md §7.3), not its speed: per scale, short-side resize to
round(scale x base), centred padding with the mean colour to at least the crop, sliding crop windows
with stride ceil(crop x 2/3) shifted back to end inside the padded image, each window and its mirror
through the network (flip averaging is always on), softmax, then the projection to the evaluation
taxonomy when the taxonomies differ, averaging by window coverage, padding cut away, bilinear resize
to the original size, and the mean over scales. Here every step runs on the device, and the windows
of several images (with their mirrors) go through the network together in batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from mseg_fast.constants import IMAGENET_MEAN, IMAGENET_STD
from mseg_fast.errors import UserError


@dataclass(frozen=True)
class InferenceSpec:
    """How to run the network over an image (MSeg's test config, §7.2).

    base_size: short side at scale 1; scales: MSeg's single scale (1.0,) or its multi-scale list;
    crop: the window (713 in all of MSeg's test configs); window_batch: windows (mirrors included) per
    forward pass.
    """

    base_size: int
    scales: tuple[float, ...] = (1.0,)
    crop: int = 713
    window_batch: int = 8

    @property
    def stride(self) -> int:
        return math.ceil(self.crop * 2 / 3)


MULTI_SCALE = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def resized_size(height: int, width: int, short: int) -> tuple[int, int]:
    """MSeg's short-side resize: the short side becomes `short`, the long side round(short x ratio)."""
    if height > width:
        return round(short * height / width), short
    return short, round(short * width / height)


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Window starts along one axis of a padded image: k x stride, shifted back to end inside it."""
    count = math.ceil(max(size - crop, 0) / stride) + 1
    return [min(k * stride + crop, size) - crop for k in range(count)]


def _mean_fill(channels: int, device: torch.device) -> torch.Tensor:
    return torch.tensor(IMAGENET_MEAN[:channels], device=device).view(channels, 1, 1)


def _prepare(image: torch.Tensor, short: int, crop: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """HWC uint8 RGB -> normalised CHW float, resized and mean-padded to at least crop x crop.

    Returns:
        The padded image and (top, left, height, width) of the resized image inside it.
    """
    height, width = resized_size(image.shape[0], image.shape[1], short)
    chw = image.permute(2, 0, 1).float()[None]
    chw = F.interpolate(chw, size=(height, width), mode="bilinear", align_corners=False)[0]
    pad_h, pad_w = max(crop - height, 0), max(crop - width, 0)
    top, left = pad_h // 2, pad_w // 2
    padded = _mean_fill(3, chw.device).expand(3, height + pad_h, width + pad_w).clone()
    padded[:, top:top + height, left:left + width] = chw
    std = torch.tensor(IMAGENET_STD, device=chw.device).view(3, 1, 1)
    return (padded - _mean_fill(3, chw.device)) / std, (top, left, height, width)


def _project(probs: torch.Tensor, projection: torch.Tensor | None) -> torch.Tensor:
    """K_model x h x w probabilities onto the evaluation classes (a K_eval x K_model matrix), or as they are."""
    if projection is None:
        return probs
    return torch.einsum("kc,chw->khw", projection.to(probs), probs)


@torch.no_grad()
def scale_maps(model, images: list[torch.Tensor], spec: InferenceSpec,
               projection: torch.Tensor | None = None) -> list[list[torch.Tensor]]:
    """Per image, per scale: the coverage-averaged class probabilities of the resized image, padding cut
    away (K x h_s x w_s), before the resize back to the original size.

    Args:
        model: maps normalised NCHW crops to logits at the crop's size (eval mode).
        images: HWC uint8 RGB tensors on the model's device.
        projection: K_eval x K_model matrix applied to the softmax (MSeg's universal -> test mapping), or
            None when the model's classes are the evaluation classes.
    """
    out: list[list[torch.Tensor]] = [[] for _ in images]
    for scale in spec.scales:
        short = round(scale * spec.base_size)
        prepared = [_prepare(image, short, spec.crop) for image in images]
        # Sums over the image's own region only: padding is cut away in the end, so its pixels need no
        # softmax (at base 360 a 1080p photo's windows are half padding).
        sums: list[torch.Tensor | None] = [None] * len(images)
        counts = [torch.zeros(box[2:], device=p.device) for p, box in prepared]
        jobs = [(i, y, x) for i, (padded, _) in enumerate(prepared)
                for y in window_starts(padded.shape[1], spec.crop, spec.stride)
                for x in window_starts(padded.shape[2], spec.crop, spec.stride)]
        per_pass = max(1, spec.window_batch // 2)  # each window goes with its mirror
        for start in range(0, len(jobs), per_pass):
            chunk = jobs[start:start + per_pass]
            crops = torch.stack([prepared[i][0][:, y:y + spec.crop, x:x + spec.crop] for i, y, x in chunk])
            logits = model(torch.cat([crops, crops.flip(-1)])).float()
            for k, (i, y, x) in enumerate(chunk):
                top, left, height, width = prepared[i][1]
                y0, y1 = max(y, top), min(y + spec.crop, top + height)
                x0, x1 = max(x, left), min(x + spec.crop, left + width)
                # The mirror's logits for the same pixels: its columns crop-(x1-x) .. crop-(x0-x), flipped;
                # cutting before flipping and softmax keeps both to the image's own region.
                plain = logits[k, :, y0 - y:y1 - y, x0 - x:x1 - x]
                mirror = logits[len(chunk) + k, :, y0 - y:y1 - y, spec.crop - (x1 - x):spec.crop - (x0 - x)].flip(-1)
                window = _project(F.softmax(plain, dim=0), projection)
                window += _project(F.softmax(mirror, dim=0), projection)
                if sums[i] is None and window.shape[1:] == (height, width):
                    sums[i] = window  # one window holds the whole image (small base sizes)
                else:
                    if sums[i] is None:
                        sums[i] = torch.zeros((window.shape[0], height, width), device=window.device)
                    sums[i][:, y0 - top:y1 - top, x0 - left:x1 - left] += window
                counts[i][y0 - top:y1 - top, x0 - left:x1 - left] += 2  # the window and its mirror
        for i in range(len(images)):
            out[i].append(sums[i].div_(counts[i]))
    return out


def _at_size(maps: list[torch.Tensor], size: tuple[int, int], classes: slice) -> torch.Tensor:
    """Mean over scales of the maps' `classes`, bilinearly resized to `size` as OpenCV does (MSeg's resize)."""
    total = sum(_resized(m[classes], _source_index(size[0], m.shape[1], m.device),
                         _source_index(size[1], m.shape[2], m.device)) for m in maps)
    return total / len(maps)


def predict_probabilities(model, images: list[torch.Tensor], spec: InferenceSpec,
                          projection: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Class probabilities of each image at its original size (K x H x W), the mean over scales."""
    maps = scale_maps(model, images, spec, projection)
    return [_at_size(m, tuple(image.shape[:2]), slice(None)) for m, image in zip(maps, images)]


def _source_index(out_size: int, in_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per output row (or column) of OpenCV's bilinear resize (INTER_LINEAR, which MSeg's evaluation uses): the two
    source indices and the second one's weight.

    OpenCV's coefficients: the source position (d + 0.5) x scale - 0.5 in double, scale = 1 / (out / in),
    rounded to float; its floor and the float remainder; weight 0 past either border. PyTorch's kernel takes
    the scale in float32, which moves every position by up to ~1e-4 pixel on a 1080p image: enough to flip the
    argmax of a few near-ties a megapixel, so the resize back is OpenCV's here, not F.interpolate's.
    """
    scale = 1.0 / (out_size / in_size)
    source = ((torch.arange(out_size, dtype=torch.float64) + 0.5) * scale - 0.5).float()
    first = source.floor()
    weight = source - first
    first = first.long()
    outside = (first < 0) | (first >= in_size - 1)
    weight[outside] = 0.0
    first = first.clamp(0, in_size - 1)
    return first.to(device), (first + 1).clamp(max=in_size - 1).to(device), weight.to(device)


def _bilinear(corners: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], wy: torch.Tensor,
              wx: torch.Tensor) -> torch.Tensor:
    """OpenCV's order of a bilinear value from its four source values (top-left, top-right, bottom-left,
    bottom-right): each row across first, then the two rows down."""
    top_left, top_right, bottom_left, bottom_right = corners
    top = top_left * (1 - wx) + top_right * wx
    bottom = bottom_left * (1 - wx) + bottom_right * wx
    return top * (1 - wy) + bottom * wy


def _resized(m: torch.Tensor, rows, cols) -> torch.Tensor:
    """K x h x w maps resized as OpenCV's INTER_LINEAR does (K x H x W), from _source_index's rows and columns: across
    each source row first (K x h x W, the cheap pass), then down; the same arithmetic as _bilinear per pixel."""
    (y0, y1, wy), (x0, x1, wx) = rows, cols
    across = m.index_select(2, x0) * (1 - wx) + m.index_select(2, x1) * wx
    return across.index_select(1, y0) * (1 - wy)[:, None] + across.index_select(1, y1) * wy[:, None]


@torch.no_grad()
def resized_argmax(maps: list[torch.Tensor], size: tuple[int, int], dense: float = 0.25) -> torch.Tensor:
    """argmax over classes of the sum of `maps` (K x h_s x w_s each) bilinearly resized to `size`, without
    resizing K maps.

    A bilinear value is a weighted mean of four source pixels. Where one class is the largest at all four
    source pixels of every map, it is the largest of the sum too. The other pixels, near class boundaries,
    compare only their candidates, the two largest classes of each source pixel: any other class is at most
    the third largest there, so when the best candidate beats the weighted mean of the third largest values
    it is the argmax. The few pixels left get all K classes; when more than `dense` of the image would
    (noise everywhere, as from an untrained network), the maps are resized a few classes at a time instead.
    """
    height, width = size
    tops, rows, cols = [], [], []
    for m in maps:
        tops.append(m.max(0).indices)  # max(0) is several times faster than argmax(0) on the CPU
        rows.append(_source_index(height, m.shape[1], m.device))
        cols.append(_source_index(width, m.shape[2], m.device))
    label = tops[0][rows[0][0][:, None], cols[0][0][None, :]]
    certain = torch.ones(size, dtype=torch.bool, device=label.device)
    for top, (y0, y1, _), (x0, x1, _) in zip(tops, rows, cols):
        for ys in (y0, y1):
            for xs in (x0, x1):
                certain &= top[ys[:, None], xs[None, :]] == label
    py, px = (~certain).nonzero(as_tuple=True)
    if len(py) == 0:
        return label
    if len(py) > dense * height * width or maps[0].shape[0] < 3:  # the bound needs a third class
        return _chunked_argmax(maps, size)
    # Per map: each pixel's four source pixels (as rows of the distinct source pixels' K probabilities),
    # their bilinear weights, and the top three classes of each distinct source pixel.
    corners, weights, probs, top3 = [], [], [], []
    for m, (y0, y1, wy), (x0, x1, wx) in zip(maps, rows, cols):
        r0, r1, c0, c1 = y0[py] * m.shape[2], y1[py] * m.shape[2], x0[px], x1[px]
        distinct, inverse = torch.unique(torch.stack([r0 + c0, r0 + c1, r1 + c0, r1 + c1], 1), return_inverse=True)
        corners.append(inverse)
        weights.append((wy[py], wx[px]))
        probs.append(m.reshape(m.shape[0], -1)[:, distinct].t().contiguous())
        top3.append(probs[-1].topk(3, dim=1))

    def at(values_of_corner, w, extra_dims: int) -> torch.Tensor:
        a, b = (t.view(-1, *([1] * extra_dims)) for t in w)
        return _bilinear(tuple(values_of_corner(k) for k in range(4)), a, b)

    candidates = torch.cat([t.indices[c][:, :, :2].flatten(1) for t, c in zip(top3, corners)], 1)
    value = sum(at(lambda k, p=p, c=c: p[c[:, k:k + 1], candidates], w, 1) for w, p, c in zip(weights, probs, corners))
    bound = sum(at(lambda k, t=t, c=c: t.values[c[:, k], 2], w, 0) for w, t, c in zip(weights, top3, corners))
    best = value.max(1).values
    # Ties keep the lowest class, as argmax does (a candidate may appear several times).
    winner = torch.where(value == best[:, None], candidates, maps[0].shape[0]).min(1).values
    sure = best > bound
    label[py[sure], px[sure]] = winner[sure]
    unsure = (~sure).nonzero(as_tuple=True)[0]
    if len(unsure) > dense * height * width:
        return _chunked_argmax(maps, size)
    for first in range(0, len(unsure), 4096):
        pick = unsure[first:first + 4096]
        total = sum(at(lambda k, p=p, c=c: p[c[pick, k]], (w[0][pick], w[1][pick]), 1)
                    for w, p, c in zip(weights, probs, corners))
        label[py[pick], px[pick]] = total.max(1).indices
    return label


def _chunked_argmax(maps: list[torch.Tensor], size: tuple[int, int], class_chunk: int = 16) -> torch.Tensor:
    """The same argmax for maps where most pixels are near a boundary (noise, as from an untrained network).

    F.interpolate, a few classes at a time, finds each pixel's best and second-best value (a running top two,
    not K full-size maps). Its float32 source positions differ from OpenCV's by at most a few 1e-7 of the
    image size, so its values by at most that per map (probabilities change by at most 1 between neighbouring
    source pixels); a pixel whose two best values are closer than twice that bound is decided again from
    OpenCV's coefficients over all classes. The fused resize is ~2.5x faster than resizing by gathers.
    """
    height, width = size
    device = maps[0].device
    best = torch.full(size, -1.0, device=device)
    second = torch.full(size, -1.0, device=device)
    label = torch.zeros(size, dtype=torch.int64, device=device)
    for first in range(0, maps[0].shape[0], class_chunk):
        values = sum(F.interpolate(m[None, first:first + class_chunk], size=size, mode="bilinear",
                                   align_corners=False)[0] for m in maps)
        top = values.topk(min(2, values.shape[0]), dim=0)
        value, index = top.values[0], top.indices[0] + first
        runner_up = top.values[1] if values.shape[0] > 1 else torch.full_like(value, -1.0)
        better = value > best  # strictly: ties keep the lower class, as argmax does
        second = torch.where(better, torch.maximum(best, runner_up), torch.maximum(second, value))
        best = torch.where(better, value, best)
        label = torch.where(better, index, label)
    margin = 2 * 2 * len(maps) * max(height, width) * 2.0 ** -22  # 2 x (both axes x maps x position error)
    py, px = ((best - second) <= margin).nonzero(as_tuple=True)
    axes = [(_source_index(height, m.shape[1], device), _source_index(width, m.shape[2], device)) for m in maps]
    for start in range(0, len(py), 16384):
        ys, xs = py[start:start + 16384], px[start:start + 16384]
        total = 0
        for m, ((y0, y1, wy), (x0, x1, wx)) in zip(maps, axes):
            r0, r1, c0, c1 = y0[ys], y1[ys], x0[xs], x1[xs]
            total = total + _bilinear((m[:, r0, c0], m[:, r0, c1], m[:, r1, c0], m[:, r1, c1]), wy[ys], wx[xs])
        label[ys, xs] = total.max(0).indices
    return label


def free_bytes(device: torch.device) -> int | None:
    """Memory the process may still take on `device` (the GPU's free memory; the host's MemAvailable), or None
    where the system does not say."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits(images: list[torch.Tensor], spec: InferenceSpec, classes: int) -> None:
    """Refuse, before any work, images whose class maps at the largest scale cannot fit in memory (a
    20000-pixel base size, or a 10000 x 10 panorama whose short side becomes the base size), naming the image
    size and the largest base size that fits, instead of an allocator's traceback after minutes of windows."""
    available = free_bytes(images[0].device)
    if available is None:
        return
    need = 0
    for image in images:
        height, width = resized_size(image.shape[0], image.shape[1], round(max(spec.scales) * spec.base_size))
        need += 4 * (classes + 4) * max(height, spec.crop) * max(width, spec.crop)  # maps, counts, image
    if need > available:
        fits = int(spec.base_size * math.sqrt(available / need) * 0.9)
        shapes = ", ".join(sorted({f"{i.shape[0]}x{i.shape[1]}" for i in images}))
        raise UserError(f"base size {spec.base_size} on images of {shapes} (height x width) needs "
                        f"{need / 2**30:.1f} GiB for its {classes} class maps and {images[0].device} has "
                        f"{available / 2**30:.1f} GiB free: pass a base size of at most {max(fits, 1)}"
                        f"{', fewer images per batch' if len(images) > 1 else ''}, or resize very long images first")


def predict_labels(model, images: list[torch.Tensor], spec: InferenceSpec,
                   projection: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The argmax of `predict_probabilities` (H x W int64 per image), without its K full-size maps: 194
    probability maps of a 1080p photo are 1.6 GB of floats, and resizing them took most of an image's time
    outside the network on a CPU."""
    check_fits(images, spec, projection.shape[0] if projection is not None else getattr(model, "num_classes", 1))
    return [resized_argmax(m, tuple(image.shape[:2])) for m, image in zip(scale_maps(model, images, spec, projection),
                                                                         images)]
