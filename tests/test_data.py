"""Data: deterministic embedded images, seeded augmentation, and the global-batch order across processes."""
import numpy as np
import torch
from PIL import Image

from ablate.config import compose_config, run_config
from ablate.data import build_transforms, synthetic_images
from ablate.distributed import World
from ablate.train import GlobalBatchSampler


def test_synthetic_data_is_deterministic_and_balanced():
    a, ya = synthetic_images(200, 32, 10, seed=3)
    b, yb = synthetic_images(200, 32, 10, seed=3)
    c, _ = synthetic_images(200, 32, 10, seed=4)
    assert a.shape == (200, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(ya, yb) and not np.array_equal(a, c)
    assert np.bincount(ya).tolist() == [20] * 10


def test_modern_augmentation_is_seeded_and_survives_every_magnitude():
    """rand-m9-mstd0.5-inc1 reaches posterize(bits=0) at magnitude 10; it must work (Pillow < 13)."""
    run = run_config(compose_config(["+step=recipe"]))
    train_tf, _ = build_transforms(run.data, run.recipe, seed=0)
    img = Image.fromarray(synthetic_images(1, 32, 10, 0)[0][0])
    before = torch.get_rng_state()
    outs = [train_tf(img, i) for i in range(600)]  # hundreds of RandAugment draws
    assert torch.equal(torch.get_rng_state(), before)  # global RNG untouched
    assert all(o.shape == (3, 32, 32) for o in outs)
    assert torch.equal(train_tf(img, 7), outs[7]) and not torch.equal(outs[7], outs[8])
    train_tf.epoch = 1
    assert not torch.equal(train_tf(img, 7), outs[7])  # a new epoch draws new augmentations


def test_processes_and_accumulation_see_the_same_global_batches():
    one = list(GlobalBatchSampler(100, batch=16, accum=1, world=World(), seed=0))
    accum = list(GlobalBatchSampler(100, batch=16, accum=2, world=World(), seed=0))
    ranks = [list(GlobalBatchSampler(100, batch=16, accum=1, world=World(r, 2), seed=0)) for r in range(2)]
    assert len(one) == 96 and one == accum  # 6 full global batches, remainder dropped
    for step in range(6):
        global_batch = one[16 * step:16 * (step + 1)]
        assert ranks[0][8 * step:8 * (step + 1)] + ranks[1][8 * step:8 * (step + 1)] == global_batch
    assert sorted(one) == sorted(set(one))
