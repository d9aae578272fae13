"""Where a split's images come from: the embedded procedural data set, an ImageFolder scan, decoding into memory
(once per process, at the size the run needs), the start-up checks of the files and the data's fingerprint."""
from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..config import DataConfig
from ..errors import DataError
from ..io import atomic_write_json
from .geometry import eval_resize, resize_shorter


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


ORIENTATIONS = 5  # stripe angles 0, +-22.5, +-45, +-67.5, 90 degrees: a horizontal flip keeps the class
FREQUENCIES = (3.0, 6.0)  # stripe pairs across the image: coarse, fine (2x apart, beyond crop-zoom jitter)


def synthetic_class_names(num_classes: int) -> list[str]:
    return [f"{90 / (ORIENTATIONS - 1) * (c % ORIENTATIONS):g}deg-{'fine' if c >= ORIENTATIONS else 'coarse'}"
            for c in range(num_classes)]


def synthetic_images(n: int, size: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` RGB uint8 images (n, size, size, 3): a striped shape on a noisy background.

    The class is the stripes' texture: orientation (|angle| of 5) x frequency (coarse, fine); the angle's sign is
    random, so the horizontal flip of standard augmentation never changes a label. Shape (disk, square,
    diamond), position, size, colours, phase and noise are random nuisances, so a convnet must learn oriented
    texture filters. Deterministic in (n, size, num_classes, seed).
    """
    if not 2 <= num_classes <= ORIENTATIONS * len(FREQUENCIES):
        raise DataError(f"data.num_classes={num_classes} is not allowed for synthetic data; "
                        f"choose 2 to {ORIENTATIONS * len(FREQUENCIES)}")
    g = torch.Generator().manual_seed(seed)
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = coords[None, :, None], coords[None, None, :]
    col = lambda v: v[:, None, None]  # noqa: E731
    dx, dy = xx - col(0.35 + 0.3 * u(n)), yy - col(0.35 + 0.3 * u(n))
    radius = col(0.25 + 0.15 * u(n))
    shape = torch.randint(0, 3, (n,), generator=g)
    masks = torch.stack([dx**2 + dy**2 < radius**2, torch.maximum(dx.abs(), dy.abs()) < radius * 0.85,
                         dx.abs() + dy.abs() < radius * 1.2], 1)
    mask = masks[torch.arange(n), shape].float()[:, None]
    sign = torch.where(u(n) < 0.5, -1.0, 1.0)
    angle = col(sign * math.pi / 2 * (labels % ORIENTATIONS).float() / (ORIENTATIONS - 1) + 0.05 * (u(n) - 0.5))
    freq = col(torch.tensor(FREQUENCIES)[labels // ORIENTATIONS] * (0.9 + 0.2 * u(n)))
    phase = col(2 * math.pi * u(n))
    stripes = (torch.sin(2 * math.pi * freq * (xx * torch.cos(angle) + yy * torch.sin(angle)) + phase) > 0).float()
    c1, c2, bg = u(n, 3, 1, 1), u(n, 3, 1, 1), u(n, 3, 1, 1)
    fg = c1 * stripes[:, None] + c2 * (1 - stripes[:, None])
    img = bg * (1 - mask) + fg * mask + 0.08 * torch.randn(n, 3, size, size, generator=g)
    img = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return img.numpy(), labels.numpy()


def scan_image_folder(split_dir: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """(path, class index) of every image under split_dir/<class>/, classes sorted as torchvision does.

    Refused, naming the folder: a hidden class folder (`.ipynb_checkpoints/`), a class with no image, and any
    image reached twice (a class folder that links back into the split would relabel every image under it)."""
    if not split_dir.is_dir():
        raise DataError(f"data folder {split_dir} does not exist; an ImageFolder root needs train/ and val/ "
                        "with one sub-folder per class")
    class_dirs = sorted((d for d in split_dir.iterdir() if d.is_dir()), key=lambda d: d.name)
    hidden = [d.name for d in class_dirs if d.name.startswith(".")]
    if hidden:
        raise DataError(f"data folder {split_dir} holds hidden folder(s) {', '.join(hidden)}: a class folder may "
                        "not start with '.'; move them out of the split")
    classes = [d.name for d in class_dirs]
    samples, seen = [], {}
    for i, d in enumerate(class_dirs):
        files = [p for p in sorted(d.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        if not files:
            raise DataError(f"class folder {d} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                            "remove it or add its images")
        for p in files:
            real = p.resolve()
            if real in seen:
                raise DataError(f"image {real} is reached twice, as {seen[real]} and as {p}: "
                                "a class folder may not link to another or back into its split")
            seen[real] = p
            samples.append((p, i))
    if not samples:
        raise DataError(f"data folder {split_dir} holds no class sub-folders with images")
    return samples, classes


def load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e


def decode_all(samples: list[tuple[Path, int]], desc: str, short: int | None = None,
               interpolation: str = "bilinear") -> tuple[np.ndarray, np.ndarray]:
    """Decode every image once into one uint8 array (all must share a size, e.g. CIFAR's 32x32). With `short`,
    each image's shorter side is first resized to `short` exactly as the eval transform resizes it (torchvision's
    Resize on the PIL image), so the in-memory copy is as small as the run needs and evaluating it is a centre
    crop that equals the per-sample eval transform's output."""
    def decode(path: Path) -> np.ndarray:
        img = load_image(path)
        return np.asarray(img if short is None else resize_shorter(img, short, interpolation))

    first = decode(samples[0][0])
    images = np.empty((len(samples), *first.shape), np.uint8)
    for i, (path, _) in enumerate(tqdm(samples, desc=desc, unit="img", mininterval=2, leave=False)):
        a = decode(path)
        if a.shape != first.shape:
            raise DataError(f"image {path} is {a.shape[1]}x{a.shape[0]}, others {first.shape[1]}x{first.shape[0]}: "
                            "data.in_memory needs one image size; set data.in_memory=false")
        images[i] = a
    return images, np.array([y for _, y in samples], np.int64)


def fixed_subset(n: int, keep: int | None, seed: int) -> np.ndarray:
    """A fixed class-agnostic random subset of `keep` of `n` indices (all if keep is None)."""
    if keep is None or keep >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:keep])


_DECODED: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


@functools.lru_cache(maxsize=1)
def synthetic_dataset(n: int, size: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """synthetic_images, made once per process for a sweep's jobs (at 224 px, a minute each); callers index
    copies out of it and never write to it."""
    return synthetic_images(n, size, num_classes, seed)


def scan_folder_splits(data: DataConfig, interpolation: str) -> tuple[dict, list[str], str, dict]:
    """{split: (decoded uint8 images or paths, labels)} of an ImageFolder root, its classes, fingerprint and
    {split: the file of each image}. In-memory data are decoded at the size the run needs (decode_all's `short`),
    once per process."""
    root = Path(data.root).expanduser()
    arrays, classes, files, sources = {}, None, {}, {}
    for split, keep in (("train", data.train_subset), ("val", data.val_subset)):
        samples, split_classes = scan_image_folder(root / split)
        if classes is not None and split_classes != classes:
            raise DataError(f"{root}/train and {root}/val have different class folders")
        classes = split_classes
        files[split] = samples
        samples = [samples[i] for i in fixed_subset(len(samples), keep, data.seed)]
        sources[split] = [p for p, _ in samples]
        if data.in_memory:
            short = eval_resize(data)
            key = (str(root.resolve()), split, keep, data.seed, short, interpolation)
            if key not in _DECODED:  # a sweep (or bench rotation) in one process decodes each split once
                _DECODED[key] = decode_all(samples, f"decoding {root / split}", short, interpolation)
            arrays[split] = _DECODED[key]
        else:
            if data.verify:
                verify_images(samples, f"checking {root / split}")
            arrays[split] = ([p for p, _ in samples], np.array([y for _, y in samples], np.int64))
    check_held_out(files["train"], files["val"], root)
    if len(classes) != data.num_classes:
        raise DataError(f"data.num_classes={data.num_classes} but {root}/train has {len(classes)} class folders; "
                        f"set data.num_classes={len(classes)}")
    return arrays, classes, folder_fingerprint(root, files, contents=data.in_memory), sources


FINGERPRINT_CACHE = Path("~/.cache/ablate/fingerprints.json")


def folder_fingerprint(root: Path, files: dict[str, list[tuple[Path, int]]], contents: bool) -> str:
    """A digest of an ImageFolder root's file list (split/class/name) and every file's bytes (`sha256:`), so runs
    on different copies of a data set are told apart. Reading the bytes costs a pass over the files, so the digest
    is cached per root, keyed by the list's names, sizes and modification times. Streamed data (contents=False:
    ImageNet's 140 GB would take a long first pass) are digested by their list and sizes only (`sha256-list:`)."""
    listing = [(split, str(p.relative_to(root / split)), p.stat().st_size, p.stat().st_mtime_ns)
               for split, samples in files.items() for p, _ in samples]
    stat_key = f"{root.resolve()}:{contents}:{hashlib.sha256(json.dumps(listing).encode()).hexdigest()}"
    cache_path = FINGERPRINT_CACHE.expanduser()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache, dict) and isinstance(cache.get(stat_key), str):
        return cache[stat_key]
    digest = hashlib.sha256()
    for split, samples in files.items():
        for p, _ in samples:
            digest.update(f"{split}/{p.relative_to(root / split)}\0".encode())
            digest.update(hashlib.sha256(p.read_bytes()).digest() if contents else str(p.stat().st_size).encode())
    fingerprint = ("sha256:" if contents else "sha256-list:") + digest.hexdigest()[:32]
    try:  # a cache that cannot be written costs a pass over the files next time, nothing else
        atomic_write_json(cache_path, {**(cache if isinstance(cache, dict) else {}), stat_key: fingerprint})
    except OSError:
        pass
    return fingerprint


def synthetic_fingerprint(data: DataConfig) -> str:
    """The embedded data are a function of their generator's arguments."""
    spec = [data.train_size + data.val_size, data.image_size, data.num_classes, data.seed]
    return "synthetic:" + hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:32]


def check_held_out(train: list[tuple[Path, int]], val: list[tuple[Path, int]], root: Path) -> None:
    """Refuses a val split that shares a file with train (val a link to train, or hard links of its files):
    its top-1 would be training accuracy."""
    def inode(path: Path) -> tuple[int, int]:
        st = path.stat()
        return st.st_dev, st.st_ino
    seen = {inode(p): p for p, _ in train}
    for p, _ in val:
        if inode(p) in seen:
            shared = sum(inode(q) in seen for q, _ in val)
            raise DataError(f"{root}/val shares {shared} of its {len(val)} files with train (e.g. {p} is "
                            f"{seen[inode(p)]}): val must hold images the net never trains on")


def verify_images(samples: list[tuple[Path, int]], desc: str) -> None:
    """Open every image once at start-up (data.verify=true), so that a bad file fails now, not mid-epoch."""
    for path, _ in tqdm(samples, desc=desc, unit="img", mininterval=2, leave=False):
        try:
            with Image.open(path) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
            raise DataError(f"cannot read image {path}: {e}") from e
