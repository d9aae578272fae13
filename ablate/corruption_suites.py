"""The corruption suites as data: the corruptions' names by family, each suite's per-severity parameters (those of
the reference code, hendrycks/robustness `make_cifar_c.py` and `make_imagenet_c.py`) and how its images are made.
Plain Python and numpy, so the config schema validates `eval.corruptions` and the report names its columns without
loading the kernels (ablate.corruptions)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAMILIES = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
CORRUPTIONS = tuple(name for names in FAMILIES.values() for name in names)
NOT_MADE = {"frost": "needs the reference's frost photographs, which no dependency ships"}

# make_cifar_c.py: the parameters of severities 1..5 for 32x32 images
CIFAR10C = {
    "gaussian_noise": [0.04, 0.06, .08, .09, .10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [.01, .02, .03, .05, .07],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "zoom_blur": [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
                  np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)],
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
    "fog": [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "brightness": [.05, .1, .15, .2, .3],
    "contrast": [.75, .5, .4, .3, 0.15],
    # (alpha, sigma, affine) in pixels: the reference's IMSIZE (32) times its fractions
    "elastic_transform": [tuple(32 * f for f in c) for c in
                          [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)]],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
}

# make_imagenet_c.py: the parameters of severities 1..5 for 224x224 images
IMAGENETC = {
    "gaussian_noise": [.08, .12, 0.18, 0.26, 0.38],
    "shot_noise": [60, 25, 12, 5, 3],
    "impulse_noise": [.03, .06, .09, 0.17, 0.27],
    "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
    "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
    "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
    "zoom_blur": [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                  np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)],
    "snow": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
             (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
    "fog": [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)],
    "brightness": [.1, .2, .3, .4, .5],
    "contrast": [0.4, .3, .2, .1, .05],
    # the reference's 244 (for 224, as its comment says) times its fractions
    "elastic_transform": [tuple(244 * f for f in c) for c in
                          [(2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02)]],
    "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
    "jpeg_compression": [25, 18, 15, 10, 7],
}


@dataclass(frozen=True)
class Suite:
    """One benchmark's corruptions: its parameters, the image size they were made for (None: the images as
    evaluated), the JPEG quality its images are saved at (None: lossless) and how many images are corrupted at
    a time (None: all; a fixed number keeps 224 px batches in memory and the random draws reproducible)."""
    params: dict
    source_size: int | None = None
    jpeg_quality: int | None = None
    chunk: int | None = None


SUITES = {"cifar10c": Suite(CIFAR10C), "imagenet_c": Suite(IMAGENETC, source_size=224, jpeg_quality=85, chunk=100)}


def corruption_list(spec: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """eval.corruptions as names: null -> none, a suite's name (cifar10c, imagenet_c) -> all of CORRUPTIONS, or a
    list of them."""
    if spec is None:
        return ()
    names = CORRUPTIONS if spec in SUITES else (spec,) if isinstance(spec, str) else tuple(spec)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        why = "".join(f" ({n} {NOT_MADE[n]})" for n in unknown if n in NOT_MADE)
        raise ValueError(f"{' or '.join(SUITES)} or a list of {', '.join(CORRUPTIONS)}{why}")
    return names
