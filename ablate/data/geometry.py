"""The resize and crop math of both pipelines, as torchvision and PIL do it: the eval transform's shorter side, the
random-resized-crop boxes, and PIL's antialiased resampling as batched matrix products."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from ..config import DataConfig


def eval_resize(data: DataConfig) -> int:
    """The shorter side the eval transform resizes to before its centre crop (timm: floor(size / crop_pct))."""
    return math.floor(data.image_size / data.eval_crop_pct)


def resize_shorter(img: Image.Image, short: int, interpolation: str) -> Image.Image:
    """The eval transform's resize: the shorter side to `short` (torchvision's Resize of the PIL image)."""
    if min(img.size) == short:
        return img
    return TF.resize(img, short, interpolation=TF.InterpolationMode(interpolation))


CROP_TRIES = 10  # torchvision RandomResizedCrop.get_params


def random_resized_crop_boxes(u: np.ndarray, height: int, width: int, scale, ratio=(3 / 4, 4 / 3)) -> np.ndarray:
    """torchvision's RandomResizedCrop.get_params for many samples at once: (n, 4) integer boxes (top, left,
    h, w). `u` (n, 4 * CROP_TRIES) holds uniform draws in [0, 1): area, log-ratio, top, left of each try."""
    area_u, ratio_u, top_u, left_u = np.split(u, 4, axis=1)
    target_area = height * width * (scale[0] + (scale[1] - scale[0]) * area_u)
    log_r = np.log(ratio)
    aspect = np.exp(log_r[0] + (log_r[1] - log_r[0]) * ratio_u)
    w = np.rint(np.sqrt(target_area * aspect)).astype(np.int64)
    h = np.rint(np.sqrt(target_area / aspect)).astype(np.int64)
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    top = np.floor(top_u * (height - h + 1)).astype(np.int64)
    left = np.floor(left_u * (width - w + 1)).astype(np.int64)
    first = ok.argmax(1)
    rows = np.arange(len(u))
    boxes = np.stack([top[rows, first], left[rows, first], h[rows, first], w[rows, first]], 1)
    # no try fits: torchvision's fallback, a centre crop at the aspect ratio clamped to `ratio`
    in_ratio = width / height
    fw, fh = width, height
    if in_ratio < min(ratio):
        fh = int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw = int(round(height * max(ratio)))
    boxes[~ok.any(1)] = ((height - fh) // 2, (width - fw) // 2, fh, fw)
    return boxes


PIL_SUPPORT = {"box": 0.5, "bilinear": 1.0, "bicubic": 2.0}


def _pil_filter(d: torch.Tensor, mode: str) -> torch.Tensor:
    """PIL's resampling kernels: box, triangle (bilinear) and Keys cubic with a = -0.5 (bicubic)."""
    if mode == "box":
        return ((d >= -0.5) & (d < 0.5)).to(d.dtype)
    d = d.abs()
    if mode == "bilinear":
        return (1 - d).clamp(min=0)
    a = -0.5
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = (((d - 5) * d + 8) * d - 4) * a
    return torch.where(d < 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def resample_matrix(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int, mode: str) -> torch.Tensor:
    """(n, out_size, in_size) weights that resize each sample's span [start, start + length) of an axis to
    out_size pixels as PIL's `crop(...).resize(...)` does: pixel-centre sampling, the kernel widened by the
    scale when shrinking (antialias), and taps outside the span dropped with the weights renormalised."""
    scale = length.float() / out_size                                     # (n,)
    filterscale = scale.clamp(min=1.0)[:, None, None]
    centre = (torch.arange(out_size, dtype=torch.float32) + 0.5) * scale[:, None]          # (n, out)
    r = torch.arange(in_size, dtype=torch.float32) - start.float()[:, None]                # (n, in)
    d = (r[:, None, :] + 0.5 - centre[:, :, None]) / filterscale                           # (n, out, in)
    inside = (r >= 0) & (r < length.float()[:, None])
    w = _pil_filter(d, mode) * ((d.abs() < PIL_SUPPORT[mode]) & inside[:, None, :])
    return w / w.sum(-1, keepdim=True)


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Each image's box (top, left, h, w) resized to size x size and flipped where `flip`, as torchvision's
    resized_crop + hflip on a PIL image (two batched matrix products). images: (n, c, H, W) float in [0, 255]."""
    _, _, height, width = images.shape
    top, left, h, w = boxes.unbind(1)
    rows = resample_matrix(top, h, height, size, mode)                     # (n, size, H)
    cols = resample_matrix(left, w, width, size, mode)                     # (n, size, W)
    cols = torch.where(flip[:, None, None], cols.flip(1), cols)
    # PIL resizes horizontally, then vertically, clipping to the pixel range after each pass
    x = (images @ cols.transpose(1, 2)[:, None]).clamp(0, 255)
    return (rows[:, None] @ x).clamp(0, 255)
