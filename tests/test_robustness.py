"""Corruptions (CIFAR-10-C definitions, batched) and the robustness fields of a run's record."""
import importlib.util
import json
import os
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ablate import corruption_suites, corruptions
from ablate.config import compose_config, run_config
from ablate.data import synthetic_images
from ablate.train import train

from helpers import SMOKE, photo_folder

IMAGES = synthetic_images(24, 32, 10, seed=5)[0]


@pytest.mark.parametrize("name", corruption_suites.CORRUPTIONS)
def test_each_corruption_changes_the_image_more_at_higher_severity(name):
    """Every corruption keeps shape and dtype and changes the image, severity 5 more than severity 1, but
    elastic_transform: CIFAR-10-C's severity 1 is a pure 2.6 px random affine and severity 5 a 1 px affine plus
    a fine displacement field, which moves pixels less on average (the reference's own tables)."""
    mild, severe = (corruptions.corrupt(IMAGES, name, s) for s in (1, 5))
    for out in (mild, severe):
        assert out.shape == IMAGES.shape and out.dtype == np.uint8
        assert not np.array_equal(out, IMAGES)
    change = [np.abs(o.astype(float) - IMAGES).mean() for o in (mild, severe)]
    if name == "elastic_transform":
        assert corruption_suites.CIFAR10C[name][0] == (0, 0, 32 * 0.08)
        assert corruption_suites.CIFAR10C[name][4] == (32 * 0.1, 32 * 0.03, 32 * 0.03)
    else:
        assert change[1] > change[0], change
    assert np.array_equal(corruptions.corrupt(IMAGES, name, 3), corruptions.corrupt(IMAGES, name, 3))  # seeded


def _imagecorruptions():
    """The field's reference package. It imports pkg_resources (gone from current setuptools) only to find
    its frost images, so a stand-in that answers that one question is enough to load it."""
    spec = importlib.util.find_spec("imagecorruptions")
    root = os.path.dirname(spec.origin)
    sys.modules.setdefault("pkg_resources", types.SimpleNamespace(
        resource_filename=lambda package, path: os.path.join(root, path)))
    import imagecorruptions.corruptions as reference
    return reference


DETERMINISTIC = ("contrast", "brightness", "jpeg_compression", "pixelate", "defocus_blur")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["contrast", "brightness", "jpeg_compression", "pixelate", "defocus_blur",
                                  "gaussian_noise", "shot_noise", "impulse_noise", "motion_blur"])
def test_batched_corruptions_match_the_reference_package(name):
    """Deterministic ones: the same pixels within uint8 rounding. Random ones (noise, motion blur's angle): the
    same mean change per severity within 10% (different random draws, the same distribution)."""
    reference = _imagecorruptions()
    fn = getattr(reference, name)
    for severity in (1, 3, 5):
        theirs = np.stack([np.clip(np.asarray(fn(Image.fromarray(x) if name in ("pixelate", "jpeg_compression") else x,
                                                 severity), dtype=np.float64), 0, 255).astype(np.uint8)
                           for x in IMAGES])
        # imagecorruptions holds ImageNet-C's parameters: ours, without ImageNet-C's JPEG save
        ours = corruptions.corrupt(IMAGES, name, severity, corruption_suites.Suite(corruption_suites.IMAGENETC))
        if name in DETERMINISTIC:
            assert np.abs(ours.astype(int) - theirs).max() <= 1, (name, severity)
        else:
            change = [np.abs(o.astype(float) - IMAGES).mean() for o in (ours, theirs)]
            assert change[0] == pytest.approx(change[1], rel=0.1), (name, severity, change)


def test_cifar_parameters_are_the_reference_tables():
    assert corruption_suites.CIFAR10C["gaussian_noise"] == [0.04, 0.06, .08, .09, .10]
    assert len(corruption_suites.CORRUPTIONS) == 14 and set(corruption_suites.NOT_MADE) == {"frost"}
    assert all(len(corruption_suites.CIFAR10C[n]) == 5 for n in corruption_suites.CORRUPTIONS)


def test_run_records_robustness_and_the_report_reads_old_records_too(tmp_path):
    from ablate.report import collect, summarize
    run = run_config(compose_config(["+step=baseline", *SMOKE, "eval.corruptions=[fog,contrast]", "eval.subset=64",
                                     "eval.severities=[1,5]", f"eval.cache_dir={tmp_path / 'cache'}"]))
    train(run, tmp_path / "runs" / "baseline")
    record = json.loads((tmp_path / "runs" / "baseline" / "result.json").read_text())
    rob = record["robustness"]
    assert rob["corruptions"] == ["fog", "contrast"] and rob["severities"] == [1, 5] and rob["subset"] == 64
    assert set(rob["top1"]["fog"]) == {"1", "5"} and 0 <= rob["mean_corruption_top1"] <= 100
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 4  # made once, kept for the next run
    old = run_config(compose_config(["+step=recipe", *SMOKE]))  # no eval.corruptions: a record without the fields
    train(old, tmp_path / "runs" / "recipe")
    runs, problems = collect(tmp_path / "runs")
    assert not problems and len(runs) == 2
    summary = summarize(runs).set_index("step")
    assert summary.loc["baseline", "mca_mean"] == pytest.approx(rob["mean_corruption_top1"])
    assert pd.isna(summary.loc["recipe", "mca_mean"]) and summary.loc["baseline", "mce"] == pytest.approx(100)


def test_robustness_command_adds_the_fields_to_a_finished_run(tmp_path, capsys):
    from ablate.robustness import main
    train(run_config(compose_config(["+step=baseline", *SMOKE])), tmp_path / "run")
    argv = [str(tmp_path), "corruptions=[snow]", "severities=[2]", "subset=32", "cache_dir=null"]
    threads = torch.get_num_threads()
    assert main([*argv, f"threads={threads + 1}"]) == 0
    assert torch.get_num_threads() == threads  # the caller's threads are restored
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["robustness"]["corruptions"] == ["snow"] and record["status"] == "finished"
    assert main(argv) == 0 and "has it" in capsys.readouterr().out  # not evaluated twice


@pytest.mark.parametrize("in_memory", [True, False])
def test_imagenet_c_corrupts_the_224_px_files_then_evaluates_them_as_val(tmp_path, in_memory):
    """ImageNet-C's way: the 224 px val file corrupted (and saved as JPEG q85), then the run's eval transform;
    the clean images taken that way are exactly the val split's own evaluated images."""
    from ablate.data import build_datasets
    from ablate.robustness import as_evaluated, source_subset, val_subset
    root = photo_folder(tmp_path / "imagenette")
    run = run_config(compose_config(["+experiment=imagenette_proxy", f"data.root={root}", "data.num_classes=2",
                                     f"data.in_memory={str(in_memory).lower()}"]))
    val = build_datasets(run.data, run.augment, run.seed).val
    source, labels = source_subset(val, 8, 224)
    evaluated, same_labels = val_subset(val, 8)
    assert source.shape == (len(labels), 224, 224, 3) and np.array_equal(labels, same_labels)
    assert np.array_equal(as_evaluated(val, source), evaluated)
    made = corruptions.corrupt(source, "gaussian_noise", 1, "imagenet_c")
    raw = corruptions.corrupt(source, "gaussian_noise", 1, corruption_suites.Suite(corruption_suites.IMAGENETC))
    assert np.array_equal(made, corruptions.jpeg_round_trip(raw, 85)) and not np.array_equal(made, raw)


def test_a_run_records_imagenet_c_and_synthetic_data_refuses_it_at_start_up(tmp_path):
    from ablate.errors import ConfigError
    root = photo_folder(tmp_path / "imagenette")
    overrides = ["+experiment=imagenette_proxy", "+step=baseline", f"data.root={root}", "data.num_classes=2",
                 "budget=smoke", "budget.batch_size=2", "eval.corruptions=[fog,contrast]", "eval.suite=imagenet_c",
                 "eval.severities=[2]", f"eval.cache_dir={tmp_path / 'cache'}"]
    record = train(run_config(compose_config(overrides)), tmp_path / "run")
    rob = record["robustness"]
    assert rob["suite"] == "imagenet_c" and rob["corruptions"] == ["fog", "contrast"] and rob["subset"] == 6
    cifar = train(run_config(compose_config([*overrides[:-3], "eval.suite=cifar10c", "eval.severities=[2]",
                                             f"eval.cache_dir={tmp_path / 'cache'}", "seed=1"])), tmp_path / "run1")
    assert cifar["robustness"]["suite"] == "cifar10c"
    assert len({p.parent for p in (tmp_path / "cache").rglob("*.npy")}) == 2  # one cache per suite: never mixed
    with pytest.raises(ConfigError, match="eval suite imagenet_c corrupts the val files at 224 px; synthetic data "
                                          "has none: use eval.suite=cifar10c"):
        run_config(compose_config([*SMOKE, "eval.corruptions=imagenet_c"]))
