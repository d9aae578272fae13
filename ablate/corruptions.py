"""Common corruptions (Hendrycks & Dietterich, ICLR 2019) of whole batches, as CIFAR-10-C and ImageNet-C make them.

Each corruption follows the definition of the reference code (hendrycks/robustness, `ImageNet-C/create_c/`), written
as batched numpy and torch operations instead of a loop over PIL images, in two suites (SUITES): `cifar10c`, the
parameters of `make_cifar_c.py` for 32 px images, applied to the images as evaluated; `imagenet_c`, those of
`make_imagenet_c.py` for 224 px images, applied to the 224 px val images (ImageNet-C's Resize(256) + CenterCrop(224)
where a file is not 224x224) and saved as JPEG at quality 85 as ImageNet-C is, before the run's eval transform.
Where the reference calls ImageMagick (motion blur, and the motion-blurred snow layer), the numpy motion blur of the
`imagecorruptions` package stands in, as it does there. `frost` is not made: it blends photographs of frost that
ship with the reference code, not with a package this project depends on. So each suite here is 14 of the 15
ImageNet-C corruptions, in four families.

Every function takes images (n, H, W, 3) float64 in [0, 1], the severity's parameters and a numpy Generator,
and returns the same shape in [0, 1]. `corrupt()` picks the suite's parameters, seeds the generator from the
(corruption, severity) pair, and quantises to uint8 as the reference saves its images.
"""
from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .corruption_suites import CORRUPTIONS, NOT_MADE, SUITES, Suite
from .data.geometry import resample_matrix


# ------------------------------------------------------------------------------------------- helpers
def _pad_index(n: int, pad: int, mode: str) -> torch.Tensor:
    """Indices of a 1-D axis of length n padded by `pad` on both sides, as scipy.ndimage names the modes:
    nearest (edge repeated), reflect (d c b a | a b c d), mirror (d c b | a b c d, OpenCV's REFLECT_101)."""
    i = torch.arange(-pad, n + pad)
    if mode == "nearest":
        return i.clamp(0, n - 1)
    period = 2 * n if mode == "reflect" else 2 * n - 2
    i = i % period
    return torch.where(i < n, i, period - i - (1 if mode == "reflect" else 0))


def _filter2d(x: np.ndarray, kernel_y: np.ndarray, kernel_x: np.ndarray, mode: str) -> np.ndarray:
    """Separable correlation of every channel of (n, H, W, C) images with padding `mode`."""
    t = torch.from_numpy(np.ascontiguousarray(x, np.float32)).permute(0, 3, 1, 2)
    n, c, h, w = t.shape
    py, px = len(kernel_y) // 2, len(kernel_x) // 2
    t = t[:, :, _pad_index(h, py, mode)][:, :, :, _pad_index(w, px, mode)]
    ky = torch.tensor(np.asarray(kernel_y), dtype=torch.float32).view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    kx = torch.tensor(np.asarray(kernel_x), dtype=torch.float32).view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    t = F.conv2d(F.conv2d(t, ky, groups=c), kx, groups=c)
    return t.permute(0, 2, 3, 1).double().numpy()


def _resample(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(n, H, W, C) images resampled by matrices rows (H', H) and cols (W', W): rows @ image @ cols.T."""
    t = torch.from_numpy(np.ascontiguousarray(x, np.float32)).permute(0, 3, 1, 2)
    r = torch.as_tensor(rows, dtype=torch.float32)
    c = torch.as_tensor(cols, dtype=torch.float32)
    return (r @ t @ c.T).permute(0, 2, 3, 1).double().numpy()


def _gaussian_kernel(sigma: float, truncate: float) -> np.ndarray:
    radius = int(truncate * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return k / k.sum()


def gaussian_filter(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
    """skimage.filters.gaussian / scipy.ndimage.gaussian_filter over the two spatial axes of (n, H, W, C)."""
    if sigma <= 0:
        return x
    k = _gaussian_kernel(sigma, truncate)
    return _filter2d(x, k, k, mode)


def _zoom_centre(x: np.ndarray, zoom: float) -> np.ndarray:
    """The reference's clipped_zoom: scipy.ndimage.zoom (order 1) of the centre crop of side ceil(H / zoom),
    trimmed back to H x W. Bilinear with scipy's corner-aligned grid, as two matrix products."""
    n, h, w, c = x.shape
    ch = int(np.ceil(h / zoom))
    top = (h - ch) // 2
    out = int(round(ch * zoom))
    trim = (out - h) // 2
    src = np.arange(out) * (ch - 1) / (out - 1) if out > 1 else np.zeros(1)  # scipy: corners map to corners
    lo = np.floor(src).astype(int).clip(0, ch - 1)
    hi = (lo + 1).clip(0, ch - 1)
    frac = src - lo
    m = np.zeros((out, ch))
    m[np.arange(out), lo] += 1 - frac
    m[np.arange(out), hi] += frac
    m = m[trim:trim + h]
    return _resample(x[:, top:top + ch, top:top + ch], m, m)


def motion_blur_kernel(radius: int, sigma: float) -> np.ndarray:
    k = np.exp(-np.arange(2 * radius + 1) ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def _motion_blur(x: np.ndarray, radius: int, sigma: float, angles: np.ndarray) -> np.ndarray:
    """imagecorruptions' numpy motion blur (ImageMagick's MotionBlurImage): a one-sided Gaussian line of
    2 * radius + 1 taps at each image's angle (degrees), edges repeated."""
    n, h, w = x.shape[:3]
    kernel = motion_blur_kernel(radius, sigma)
    rows, cols = np.arange(h), np.arange(w)
    out = np.zeros_like(x)
    alive = np.ones(n, bool)
    for i, weight in enumerate(kernel):
        dy = -np.ceil(i * np.sin(np.deg2rad(angles)) - 0.5).astype(int)
        dx = -np.ceil(i * np.cos(np.deg2rad(angles)) - 0.5).astype(int)
        alive &= (np.abs(dy) < h) & (np.abs(dx) < w)  # the reference stops once a shift leaves the image
        ys = (rows[None, :] - dy[:, None]).clip(0, h - 1)
        xs = (cols[None, :] - dx[:, None]).clip(0, w - 1)
        shifted = x[np.arange(n)[:, None, None], ys[:, :, None], xs[:, None, :]]
        out += np.where(alive[:, None, None, None], weight * shifted, 0)
    return out


def _rgb_to_hsv(x: np.ndarray) -> np.ndarray:
    """skimage.color.rgb2hsv on (..., 3)."""
    v = x.max(-1)
    delta = v - x.min(-1)
    s = np.where(v > 0, delta / np.where(v > 0, v, 1), 0)
    safe = np.where(delta > 0, delta, 1)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    hue = np.where(x[..., 0] == v, (g - b) / safe, np.where(g == v, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = np.where(delta > 0, (hue / 6) % 1, 0)
    return np.stack([hue, s, v], -1)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """skimage.color.hsv2rgb on (..., 3)."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    return np.stack([np.choose(i, [c[k] for c in choices]) for k in range(3)], -1)


def _gray(x: np.ndarray) -> np.ndarray:
    """OpenCV's RGB -> gray weights."""
    return x @ np.array([0.299, 0.587, 0.114])


def _plasma_fractal(n: int, mapsize: int, wibbledecay: float, rng: np.random.Generator) -> np.ndarray:
    """The reference's diamond-square height maps, n at once, each normalised to [0, 1]."""
    maps = np.zeros((n, mapsize, mapsize))
    stepsize, wibble = mapsize, 100.0

    def wibbled(a):
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while stepsize >= 2:
        half = stepsize // 2
        corners = maps[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        square = corners + np.roll(corners, -1, axis=1)
        square = square + np.roll(square, -1, axis=2)
        maps[:, half:mapsize:stepsize, half:mapsize:stepsize] = wibbled(square)
        dr = maps[:, half:mapsize:stepsize, half:mapsize:stepsize]
        ul = maps[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        lt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2)
        maps[:, 0:mapsize:stepsize, half:mapsize:stepsize] = wibbled(lt)
        tt = dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1)
        maps[:, half:mapsize:stepsize, 0:mapsize:stepsize] = wibbled(tt)
        stepsize //= 2
        wibble /= wibbledecay
    maps -= maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def _box_resize(x: np.ndarray, size: int) -> np.ndarray:
    """PIL's BOX resize of (n, H, W, C) to size x size (its box filter, widened by the scale when shrinking)."""
    def matrix(n_in):
        return resample_matrix(torch.zeros(1, dtype=torch.int64), torch.tensor([n_in]), n_in, size, "box")[0]
    return _resample(x, matrix(x.shape[1]), matrix(x.shape[2]))


def _quantize(x: np.ndarray) -> np.ndarray:
    """What PIL holds between the reference's steps: uint8, rounded."""
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------- corruptions
def gaussian_noise(x, c, rng):
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1)


def shot_noise(x, c, rng):
    return np.clip(rng.poisson(x * c) / c, 0, 1)


def impulse_noise(x, c, rng):
    # skimage.util.random_noise(mode='s&p', amount=c): each value flipped with probability c, half to 1, half to 0
    flipped = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    return np.where(flipped, salt.astype(x.dtype), x)


def defocus_blur(x, c, rng):
    radius, alias_blur = c
    span = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    disk = ((span[:, None] ** 2 + span[None, :] ** 2) <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    half = 1 if radius <= 8 else 2  # cv2.GaussianBlur's ksize: 3 up to radius 8, then 5
    g = np.exp(-np.arange(-half, half + 1) ** 2 / (2 * alias_blur ** 2))
    g /= g.sum()
    kernel = _filter2d(disk[None, :, :, None], g, g, "mirror")[0, :, :, 0]
    t = torch.from_numpy(np.ascontiguousarray(x, np.float32)).permute(0, 3, 1, 2)
    pad = len(span) // 2
    t = t[:, :, _pad_index(x.shape[1], pad, "mirror")][:, :, :, _pad_index(x.shape[2], pad, "mirror")]
    k = torch.tensor(kernel, dtype=torch.float32).expand(3, 1, *kernel.shape)
    return np.clip(F.conv2d(t, k, groups=3).permute(0, 2, 3, 1).double().numpy(), 0, 1)


def glass_blur(x, c, rng):
    sigma, max_delta, iterations = c
    # the reference rounds down to uint8 after the first blur
    img = np.floor(gaussian_filter(x, sigma) * 255).clip(0, 255)
    n, h, w = img.shape[:3]
    idx = np.arange(n)
    for _ in range(iterations):  # locally shuffle pixels, in the reference's order, every image at once
        for row in range(h - max_delta, max_delta, -1):
            for col in range(w - max_delta, max_delta, -1):
                d = rng.integers(-max_delta, max_delta, size=(n, 2))
                r2, c2 = row + d[:, 1], col + d[:, 0]
                a, b = img[idx, row, col].copy(), img[idx, r2, c2].copy()
                img[idx, row, col], img[idx, r2, c2] = b, a
    return np.clip(gaussian_filter(img / 255, sigma), 0, 1)


def motion_blur(x, c, rng):
    radius, sigma = c
    quantized = _quantize(x).astype(np.float64)  # the reference blurs the PNG of the image
    return np.clip(_motion_blur(quantized, radius, sigma, rng.uniform(-45, 45, len(x))) / 255, 0, 1)


def zoom_blur(x, c, rng):
    out = sum(_zoom_centre(x, z) for z in c)
    return np.clip((x + out) / (len(c) + 1), 0, 1)


def snow(x, c, rng):
    n, h, w = x.shape[:3]
    layer = rng.normal(size=(n, h, w, 1), loc=c[0], scale=c[1])
    layer = _zoom_centre(layer, c[2])
    layer[layer < c[3]] = 0
    layer = np.clip(layer, 0, 1)
    layer = (layer * 255).astype(np.uint8).astype(np.float64)  # the reference's PNG of the layer
    layer = _motion_blur(layer, c[4], c[5], rng.uniform(-135, -45, n)) / 255
    x = c[6] * x + (1 - c[6]) * np.maximum(x, _gray(x)[..., None] * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2, axes=(1, 2)), 0, 1)


def fog(x, c, rng):
    n, h, w = x.shape[:3]
    size = 1 << (max(h, w) - 1).bit_length()  # the next power of two (32 for CIFAR, as the reference)
    max_val = x.max(axis=(1, 2, 3), keepdims=True)
    x = x + c[0] * _plasma_fractal(n, size, c[1], rng)[:, :h, :w, None]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1)


def brightness(x, c, rng):
    hsv = _rgb_to_hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(_hsv_to_rgb(hsv), 0, 1)


def contrast(x, c, rng):
    means = x.mean(axis=(1, 2), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1)


def elastic_transform(x, c, rng):
    """The reference's version (CIFAR's and ImageNet's are one, with parameters in pixels): a random affine of
    three points (reflect-101 border), then a smooth random displacement field (Gaussian, reflect), sampled
    bilinearly."""
    n, h, w = x.shape[:3]
    alpha, sigma, affine = c
    centre = np.float32([h, w]) // 2
    square = min(h, w) // 3
    pts1 = np.float32([centre + square, [centre[0] + square, centre[1] - square], centre - square])
    pts2 = pts1 + rng.uniform(-affine, affine, size=(n, 3, 2))
    # the affine maps pts1 -> pts2 (x, y points, as cv2.getAffineTransform); cv2.warpAffine samples the source at
    # the inverse map of each destination pixel
    src = np.concatenate([pts1, np.ones((3, 1))], 1)                                  # (3, 3)
    maps = np.linalg.solve(src[None], pts2).transpose(0, 2, 1)                         # (n, 2, 3): dst = M @ [src, 1]
    full = np.concatenate([maps, np.tile([[[0, 0, 1]]], (n, 1, 1))], 1)
    inverse = np.linalg.inv(full)[:, :2]                                                # src = inv @ [dst, 1]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
    dst = np.stack([gx, gy, np.ones_like(gx)], -1)                                      # (h, w, 3) as (x, y, 1)
    src_xy = np.einsum("nij,hwj->nhwi", inverse, dst)
    x = _bilinear(x, src_xy[..., 1], src_xy[..., 0], "mirror")
    if alpha > 0:
        field = rng.uniform(-1, 1, size=(2, n, h, w, 1))
        dx = gaussian_filter(field[0], sigma, mode="reflect", truncate=3)[..., 0] * alpha
        dy = gaussian_filter(field[1], sigma, mode="reflect", truncate=3)[..., 0] * alpha
        x = _bilinear(x, gy + dy, gx + dx, "reflect")
    return np.clip(x, 0, 1)


def _bilinear(x: np.ndarray, ys: np.ndarray, xs: np.ndarray, mode: str) -> np.ndarray:
    """x (n, H, W, C) sampled at (ys, xs) (n, H, W) with bilinear weights; out-of-range indices folded back
    by `mode` (scipy's names)."""
    n, h, w = x.shape[:3]
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
    fold_y = _pad_index(h, 2 * h, mode).numpy()
    fold_x = _pad_index(w, 2 * w, mode).numpy()
    yi = lambda v: fold_y[np.clip(v + 2 * h, 0, len(fold_y) - 1)]  # noqa: E731
    xi = lambda v: fold_x[np.clip(v + 2 * w, 0, len(fold_x) - 1)]  # noqa: E731
    b = np.arange(n)[:, None, None]
    return ((1 - fy) * (1 - fx) * x[b, yi(y0), xi(x0)] + (1 - fy) * fx * x[b, yi(y0), xi(x0 + 1)]
            + fy * (1 - fx) * x[b, yi(y0 + 1), xi(x0)] + fy * fx * x[b, yi(y0 + 1), xi(x0 + 1)])


def pixelate(x, c, rng):
    h = x.shape[1]
    small = _quantize(_box_resize(_quantize(x) / 255, int(h * c))) / 255  # PIL works on uint8 images
    return _box_resize(small, h)


def jpeg_compression(x, c, rng):
    out = np.empty_like(x)
    for i, img in enumerate(_quantize(x)):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=c)
        out[i] = np.asarray(Image.open(buf)) / 255
    return out


# --------------------------------------------------------------------------------------------- interface
def corruption_seed(name: str, severity: int) -> int:
    """The fixed seed of one (corruption, severity): every run is evaluated on the same corrupted images."""
    return CORRUPTIONS.index(name) * 10 + severity


def corrupt(images: np.ndarray, name: str, severity: int, suite: str | Suite = "cifar10c") -> np.ndarray:
    """uint8 images (n, H, W, 3) corrupted by `name` at `severity` (1..5) with the suite's parameters, uint8 as
    the reference saves them (np.uint8 of the float image: rounded down; then JPEG where the suite is)."""
    if name not in CORRUPTIONS:
        why = f" ({NOT_MADE[name]})" if name in NOT_MADE else ""
        raise ValueError(f"corruption {name!r} is not available{why}; choose from: {', '.join(CORRUPTIONS)}")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity {severity} is not allowed; expected 1..5")
    spec = SUITES[suite] if isinstance(suite, str) else suite
    rng = np.random.default_rng(corruption_seed(name, severity))
    fn, c = globals()[name], spec.params[name][severity - 1]
    step = spec.chunk or max(len(images), 1)
    out = np.concatenate([np.clip(fn(images[i:i + step].astype(np.float64) / 255, c, rng) * 255, 0, 255)
                          .astype(np.uint8) for i in range(0, len(images), step)])
    return out if spec.jpeg_quality is None else jpeg_round_trip(out, spec.jpeg_quality)


def jpeg_round_trip(images: np.ndarray, quality: int) -> np.ndarray:
    """uint8 images saved as JPEG at `quality` (PIL, as the reference saves ImageNet-C) and read back."""
    out = np.empty_like(images)
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=quality, optimize=True)
        out[i] = np.asarray(Image.open(buf))
    return out
