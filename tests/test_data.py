"""Data: deterministic embedded images, seeded augmentation, and the global-batch order across processes."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ablate.config import compose_config, run_config
from ablate.data import GlobalBatchSampler, build_datasets, build_transforms, synthetic_images
from ablate.distributed import World

from helpers import photo_folder


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


def test_repeated_augmentation_is_the_same_for_any_process_count():
    """RSB's repeated augmentation in one process: each image 3 times in a row as draw indices c * n + i, an epoch
    as long as without it, and 1 process, accumulation and 2 processes see the same global batches."""
    n = 96
    one = list(GlobalBatchSampler(n, batch=16, accum=1, world=World(), seed=0, repeats=3))
    accum = list(GlobalBatchSampler(n, batch=16, accum=2, world=World(), seed=0, repeats=3))
    ranks = [list(GlobalBatchSampler(n, batch=16, accum=1, world=World(r, 2), seed=0, repeats=3)) for r in range(2)]
    assert len(one) == n and one == accum
    for step in range(n // 16):
        assert ranks[0][8 * step:8 * (step + 1)] + ranks[1][8 * step:8 * (step + 1)] == one[16 * step:16 * (step + 1)]
    images, copies = [i % n for i in one], [i // n for i in one]
    assert images[0::3] == images[1::3] == images[2::3] and copies[:6] == [0, 1, 2, 0, 1, 2]
    assert len(set(one)) == n and len(set(images)) == n // 3  # every draw its own; a third of the images
    plain = list(GlobalBatchSampler(n, batch=16, accum=1, world=World(), seed=0))
    assert images[0::3] == plain[:n // 3]  # the same permutation, each image repeated


def test_each_repeated_copy_has_its_own_augmentation():
    """Batched pipeline: copy 0 is the image's draw without repeats; copies 1 and 2 crop it otherwise."""
    from ablate.config import DataConfig
    from ablate.data.batched import BatchedImages
    images = np.random.default_rng(0).integers(0, 256, (8, 48, 48, 3), dtype=np.uint8)
    data = DataConfig(name="t", kind="synthetic", image_size=32, num_classes=2, train_size=8, val_size=8)
    split = BatchedImages(images, np.zeros(8, dtype=np.int64), data, "bilinear", train=True, seed=0)
    x, _ = split.batch(torch.tensor([3, 8 + 3, 16 + 3, 3]))
    assert torch.equal(x[0], x[3]) and not torch.equal(x[0], x[1]) and not torch.equal(x[1], x[2])
    assert torch.equal(x[0], split.batch(torch.tensor([3]))[0][0])


@pytest.mark.parametrize("pipeline", ["batched", "per_sample"])
def test_a_recipe_trains_at_its_fraction_of_the_size_and_evaluates_at_the_size(pipeline):
    """RSB A3's train 160 / test 224, at the embedded data's 64 px: training crops 32 (a multiple of the net's
    stride), evaluation 64."""
    run = run_config(compose_config(["+step=baseline", "data.image_size=64", "recipe.train_size_fraction=0.714",
                                     f"data.pipeline={pipeline}", "data.train_size=8", "data.val_size=8"]))
    assert run.train_image_size == 32
    data = build_datasets(run.data, run.augment, run.seed, run.train_image_size)
    train_x, _ = next(iter(data.train.loader(list(range(4)), 4, 0)))
    val_x, _ = next(iter(data.val.loader(list(range(4)), 4, 0)))
    assert train_x.shape[-2:] == (32, 32) and val_x.shape[-2:] == (64, 64)


# ------------------------------------------------------------------------------------ ImageFolder roots
def _folder(root, classes=("a", "b"), n=2):
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (32, 32), (40 * i, 20, 30)).save(root / split / c / f"{i}.png")


def test_image_folder_refuses_empty_hidden_and_looping_classes(tmp_path):
    from ablate.data import scan_image_folder
    from ablate.errors import DataError
    _folder(tmp_path)
    samples, classes = scan_image_folder(tmp_path / "train")
    assert classes == ["a", "b"] and len(samples) == 4
    (tmp_path / "train" / "empty").mkdir()
    (tmp_path / "train" / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"class folder .*train/empty holds no images"):
        scan_image_folder(tmp_path / "train")
    (tmp_path / "train" / "empty" / "notes.txt").unlink()
    (tmp_path / "train" / "empty").rmdir()
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    with pytest.raises(DataError, match=r"hidden folder\(s\) .ipynb_checkpoints"):
        scan_image_folder(tmp_path / "train")
    (tmp_path / "train" / ".ipynb_checkpoints").rmdir()
    (tmp_path / "train" / "c").symlink_to(tmp_path / "train")  # a class that links back into its split
    with pytest.raises(DataError, match=r"is reached twice"):
        scan_image_folder(tmp_path / "train")


def test_unreadable_image_in_a_worker_is_one_line_naming_the_file(tmp_path):
    from ablate.cli import one_line
    from ablate.errors import DataError
    from ablate.train import train
    _folder(tmp_path / "data", n=4)
    (tmp_path / "data" / "train" / "b" / "broken.png").write_bytes(b"not a png")
    run = run_config(compose_config(["data=folder", f"data.root={tmp_path / 'data'}", "data.num_classes=2",
                                     "data.image_size=32", "train.workers=1", "budget=smoke",
                                     "budget.batch_size=4"]))
    with pytest.raises(DataError) as err:
        train(run, tmp_path / "run")
    line = one_line(err.value)
    assert line.startswith("cannot read image ") and "broken.png" in line and "\n" not in line
    assert "Traceback" not in json.loads((tmp_path / "run" / "result.json").read_text())["reason"]
    verify = run_config(compose_config(["data=folder", f"data.root={tmp_path / 'data'}", "data.num_classes=2",
                                        "data.image_size=32", "data.verify=true"]))
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        build_datasets(verify.data, verify.augment, 0)  # at start-up, before any training


# ------------------------------------------------------------------------------------- batched pipeline
def test_batched_crops_have_torchvision_distribution():
    """Same algorithm as RandomResizedCrop.get_params (10 tries, integer boxes, centre fallback): the
    area and aspect-ratio quantiles of 20,000 boxes agree with torchvision's own draws."""
    from torchvision.transforms import RandomResizedCrop
    from ablate.data.geometry import CROP_TRIES, random_resized_crop_boxes
    n = 20_000
    torch.manual_seed(0)
    theirs = np.array([RandomResizedCrop.get_params(torch.zeros(3, 32, 32), (0.35, 1.0), (3 / 4, 4 / 3))
                       for _ in range(n)])
    ours = random_resized_crop_boxes(np.random.default_rng(0).random((n, 4 * CROP_TRIES)), 32, 32, (0.35, 1.0))
    q = [0.1, 0.25, 0.5, 0.75, 0.9]
    for stat in (lambda b: b[:, 2] * b[:, 3] / 1024, lambda b: b[:, 3] / b[:, 2], lambda b: b[:, 0], lambda b: b[:, 1]):
        assert np.allclose(np.quantile(stat(ours), q), np.quantile(stat(theirs), q), atol=0.05 * stat(theirs).std() + 1e-9)
    assert ((ours[:, :2] >= 0) & (ours[:, :2] + ours[:, 2:] <= 32)).all()


@pytest.mark.parametrize("mode,pil", [("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)])
def test_batched_crop_resize_matches_pil(mode, pil):
    """The same box resized as torchvision's resized_crop + hflip on a PIL image: within uint8 rounding,
    upsampling (CIFAR's crops) and antialiased downsampling alike."""
    from ablate.data import crop_resize
    x, _ = synthetic_images(6, 64, 10, 0)
    boxes = np.array([[0, 0, 64, 64], [5, 3, 20, 30], [10, 10, 44, 40], [0, 30, 64, 34], [7, 1, 9, 12], [2, 2, 60, 61]])
    flips = torch.tensor([False, True, False, True, False, True])
    for size in (32, 48):
        ours = crop_resize(torch.from_numpy(x).permute(0, 3, 1, 2).float(), torch.from_numpy(boxes), flips, size, mode)
        for k, (top, left, h, w) in enumerate(boxes):
            ref = Image.fromarray(x[k]).crop((left, top, left + w, top + h)).resize((size, size), pil)
            if flips[k]:
                ref = ref.transpose(Image.FLIP_LEFT_RIGHT)
            diff = ours[k].permute(1, 2, 0).numpy() - np.asarray(ref, np.float32)
            assert np.abs(diff).max() <= 1.5, (mode, size, k)


def test_batched_pipeline_is_seeded_per_sample_and_epoch():
    run = run_config(compose_config(["+step=recipe"]))
    data = build_datasets(run.data, run.augment, run.seed)
    assert data.pipeline == "batched"
    idx = torch.tensor([5, 9, 100])
    a, ya = data.train.batch(idx)
    b, _ = data.train.batch(torch.tensor([100, 5]))  # the same sample in another batch: the same crop
    assert torch.equal(a[2], b[0]) and torch.equal(a[0], b[1]) and a.shape == (3, 3, 32, 32)
    data.train.set_epoch(1)
    c, _ = data.train.batch(idx)
    assert not torch.equal(a, c) and torch.equal(ya, data.train.labels[idx])
    per_sample = build_datasets(run.data.__class__(**{**run.data.__dict__, "pipeline": "per_sample"}),
                                run.augment, run.seed)
    val_batched, _ = data.val.batch(torch.arange(4))
    val_ref = torch.stack([per_sample.val[i][0] for i in range(4)])
    assert torch.allclose(val_batched, val_ref, atol=1e-5)  # evaluation: the same tensors either way
    # one face: either kind's own loader batches the val split in the order given, to the same tensors
    (xb, yb), (xp, yp) = (next(iter(split.val.loader([3, 1, 2], 3, workers=0))) for split in (data, per_sample))
    assert torch.allclose(xb, xp, atol=1e-5) and torch.equal(yb, yp) and torch.equal(yb, data.val.labels[[3, 1, 2]])


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_imagenette_is_decoded_at_the_size_the_run_needs(tmp_path, interpolation):
    """In memory at the eval transform's resize (224 -> 73 for 64 px), and evaluated as the per-sample pipeline
    evaluates the 224 px files: the same pixels, exactly."""
    root = photo_folder(tmp_path / "imagenette")
    overrides = ["+experiment=imagenette_proxy", "+step=baseline", f"data.root={root}", "data.num_classes=2",
                 "data.image_size=64",
                 f"recipe.interpolation={interpolation}"]
    run = run_config(compose_config(overrides))
    batched = build_datasets(run.data, run.augment, run.seed)
    assert batched.pipeline == "batched" and tuple(batched.train.images.shape[1:]) == (3, 73, 73)
    per_sample = build_datasets(run_config(compose_config([*overrides, "data.in_memory=false"])).data,
                                run.augment, run.seed)
    assert per_sample.pipeline == "per_sample"
    for i in range(len(batched.val)):
        x, y = batched.val.batch(torch.tensor([i]))
        ref, ref_y = per_sample.val[i]
        assert y.item() == ref_y and x.shape[1:] == ref.shape == (3, 64, 64)
        # the per-sample path normalises uint8/255 in float; equal to float rounding of one uint8 step
        assert torch.allclose(x[0], ref, atol=1e-5), (x[0] - ref).abs().max()
    x, _ = batched.train.batch(torch.arange(len(batched.train)))
    assert x.shape == (len(batched.train), 3, 64, 64)


def test_the_data_fingerprint_tells_copies_apart(tmp_path):
    root = photo_folder(tmp_path / "a", size=40, per_class=2)
    def fingerprint(r, *extra):
        run = run_config(compose_config(["data=folder", f"data.root={r}", "data.num_classes=2", "data.in_memory=true",
                                         "data.image_size=32", *extra]))
        return build_datasets(run.data, run.augment, run.seed).fingerprint
    first = fingerprint(root)
    assert first.startswith("sha256:") and fingerprint(root) == first
    copy = tmp_path / "b"
    import shutil
    shutil.copytree(root, copy)
    assert fingerprint(copy) == first  # the same files elsewhere are the same data
    img = copy / "train" / "n01" / "train_0.JPEG"
    Image.new("RGB", (40, 40), (1, 2, 3)).save(img)  # one image changed
    assert fingerprint(copy) != first
    assert fingerprint(root, "data.in_memory=false").startswith("sha256-list:")
    synthetic = run_config(compose_config([]))
    assert build_datasets(synthetic.data, synthetic.augment, 0).fingerprint.startswith("synthetic:")
