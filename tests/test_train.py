"""The training engine: a complete record, learning, exact resume, DDP = one process, clean failures."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import ablate.engine as engine
from ablate.config import compose_config, run_config
from ablate.data import build_datasets
from ablate.errors import ConfigError, DataError
from ablate.train import LAST, RESULT, RunDirConflict, TrainingFailed, train
from stages import build_net

from helpers import SMOKE, cli, killed_after

# a few seconds per run: quarter-width nets, 256 synthetic images, 2 epochs


def smoke_run(step: str, *extra: str):
    return run_config(compose_config([f"+step={step}", *SMOKE, *extra]))


def test_run_leaves_a_complete_record(tmp_path):
    run = smoke_run("separate_downsampling", "recipe.ema_decay=0.9")
    train(run, tmp_path)
    result = json.loads((tmp_path / RESULT).read_text())
    assert result["status"] == "finished" and result["reason"] is None
    assert result["step"] == {"index": 13, "name": "separate_downsampling", "adopted": True}
    assert result["params"] == sum(p.numel() for p in build_net(run.net).parameters())
    assert 0 < result["gflops_at_input"] < result["gflops"]  # 32x32 input vs the paper's 224x224
    assert len(result["epochs"]) == 2 and result["epochs"][-1]["update"] == result["updates_planned"]
    assert {"top1", "top5", "loss", "top1_ema"} <= result["final"].keys()
    assert result["train_throughput"] > 0 and result["wall_time_s"] > 0
    assert result["provenance"]["git_revision"] and result["provenance"]["versions"]["timm"]
    assert result["config"]["net"]["kernel_size"] == 7
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    ckpt = torch.load(tmp_path / LAST, weights_only=True)
    assert ckpt["epoch"] == 2
    assert torch.load(tmp_path / "best.pt", weights_only=True)["val_top1"] == result["best_top1"]
    net = build_net(run.net)
    net.load_state_dict(load_file(tmp_path / "model.safetensors"))
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in net.state_dict().items())
    assert (tmp_path / "model_ema.safetensors").exists()


@pytest.mark.slow
def test_learns_well_above_chance(tmp_path):
    """Real learning on the embedded data: 10 classes (chance 10%). ResNet-50 at quarter width, AdamW with a
    cosine schedule, 8 epochs of 2,000 images: about 50 s on 2 cores (61.6% when written)."""
    run = run_config(compose_config(["+step=baseline", "data.train_size=2000", "data.val_size=500",
                                     "recipe.optimizer=adamw", "recipe.lr=4e-3", "recipe.schedule=cosine",
                                     "recipe.weight_decay=0.05"]))
    result = train(run, tmp_path)
    assert result["final"]["top1"] > 40.0, [e["val_top1"] for e in result["epochs"]]


def _weights(path: Path) -> dict:
    return load_file(path / "model.safetensors")


@pytest.mark.slow
def test_killed_run_resumes_to_identical_result(tmp_path):
    args = ["+step=fewer_norms", *SMOKE, "budget.epochs=3", "recipe.ema_decay=0.99"]
    straight = cli(*args, f"hydra.run.dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr
    killed = cli(*args, f"hydra.run.dir={tmp_path / 'resumed'}", env_extra=killed_after(1))
    assert killed.returncode == -9  # SIGKILL, as a preempted job
    interrupted = json.loads((tmp_path / "resumed" / RESULT).read_text())
    assert interrupted["status"] == "running" and len(interrupted["epochs"]) == 1
    resumed = cli(*args, f"hydra.run.dir={tmp_path / 'resumed'}")
    assert resumed.returncode == 0, resumed.stderr

    a, b = (json.loads((tmp_path / d / RESULT).read_text()) for d in ("straight", "resumed"))
    assert b["resumed_from_epoch"] == [1] and a["resumed_from_epoch"] == []
    timing = ("train_time_s", "train_images_per_s")
    strip = lambda epochs: [{k: v for k, v in e.items() if k not in timing} for e in epochs]  # noqa: E731
    assert strip(a["epochs"]) == strip(b["epochs"]) and a["final"] == b["final"]
    wa, wb = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_finished_run_is_not_retrained_and_other_config_is_refused(tmp_path):
    run = smoke_run("baseline")
    train(run, tmp_path)
    stamps = lambda: {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.name != ".lock"}  # noqa: E731
    before = stamps()
    again = train(run, tmp_path)
    assert again["status"] == "finished"
    assert stamps() == before  # nothing rewritten (the lock file holds the PID of whoever checked last)
    with pytest.raises(RunDirConflict, match=r"differs at: net\.kernel_size: 3 -> 5"):
        train(smoke_run("baseline", "net.kernel_size=5"), tmp_path)
    retrained = train(smoke_run("baseline", "train.overwrite=true"), tmp_path)
    assert retrained["status"] == "finished" and (tmp_path / RESULT).stat().st_mtime_ns > before[RESULT]


@pytest.mark.parametrize("name", ["rsb_a1", "rsb_a2", "rsb_a3"])
def test_resnet_strikes_back_recipes_train_a_smoke_epoch(name, tmp_path):
    """LAMB, binary cross-entropy with its target threshold, Mixup/CutMix, RandAugment and (A1, A2) repeated
    augmentation, on the embedded data: one epoch trains, and the engine built what the recipe names."""
    from timm.loss import BinaryCrossEntropy
    from timm.optim import Lamb
    from ablate.engine import build_loss, build_optimizer
    run = smoke_run("baseline", f"recipe={name}", "budget.epochs=1")
    assert isinstance(build_optimizer(run, torch.nn.Linear(2, 2)), Lamb)
    mixup, loss = build_loss(run)
    assert isinstance(loss, BinaryCrossEntropy) and loss.target_threshold == 0.2 and mixup is not None
    result = train(run, tmp_path)
    assert result["status"] == "finished" and result["augmentation"]["repeated_augmentation"] == (1 if name == "rsb_a3"
                                                                                                  else 3)


@pytest.mark.slow
@pytest.mark.parametrize("repeats", [1, 3])
def test_torchrun_two_processes_match_one(tmp_path, repeats):
    """Same global batch: 2 gloo processes x 16 == 1 process x 32 (LayerNorm step; no batch-coupled mixup
    or per-process drop-path draws, which differ by construction), also with RSB's repeated augmentation."""
    args = ["+step=separate_downsampling", *SMOKE, "recipe.mixup=0", "recipe.cutmix=0",
            "recipe.drop_path_rate=0", "train.threads=1", f"recipe.repeated_augmentation={repeats}"]
    one = cli(*args, f"hydra.run.dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr
    two = cli("--nproc_per_node=2", "--master_port=29533", "-m", "ablate", *args, f"hydra.run.dir={tmp_path / 'two'}",
              module=("-m", "torch.distributed.run"))
    assert two.returncode == 0, two.stderr
    assert "Warning" not in two.stderr, two.stderr  # nothing the user has to act on (torchrun's own notes aside)
    r1, r2 = (json.loads((tmp_path / d / RESULT).read_text()) for d in ("one", "two"))
    assert r2["world_size"] == 2 and r2["replica_divergence"] == 0.0  # replicas stayed identical
    w1, w2 = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in w1:  # equal up to float32 summation order of the gradient all-reduce
        assert torch.allclose(w1[k], w2[k], rtol=1e-4, atol=1e-5), k
    assert abs(r1["final"]["loss"] - r2["final"]["loss"]) < 1e-3


def test_batch_that_does_not_divide_across_processes():
    run = smoke_run("baseline", "budget.batch_size=30")
    with pytest.raises(ConfigError, match=r"budget.batch_size=30 does not divide across 4 process"):
        run.per_process_batch(4)


def test_missing_data_root_is_named():
    with pytest.raises(ConfigError, match=r"data.root='/no/such/dir'.*does not exist"):
        run_config(compose_config(["data=folder", "data.root=/no/such/dir", "data.num_classes=2"]))


def test_unreadable_image_is_named(tmp_path):
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            Image.new("RGB", (32, 32), (10, 20, 30)).save(tmp_path / split / c / "ok.jpg")
    (tmp_path / "train" / "b" / "broken.jpg").write_bytes(b"not a jpeg")
    run = run_config(compose_config(["data=folder", f"data.root={tmp_path}", "data.num_classes=2",
                                     "data.image_size=32", "data.in_memory=true"]))
    with pytest.raises(DataError, match="cannot read image .*broken.jpg"):
        build_datasets(run.data, run.recipe, 0)


def test_folder_data_trains_streamed(tmp_path):
    for split in ("train", "val"):
        for c, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(8):
                Image.new("RGB", (40, 40), colour).save(tmp_path / split / c / f"{i}.png")
    run = run_config(compose_config(["data=folder", f"data.root={tmp_path}", "data.num_classes=2",
                                     "data.image_size=32", "train.workers=0", "budget=smoke", "budget.batch_size=8"]))
    result = train(run, tmp_path / "run")
    assert result["train_images"] == 16 and result["val_images"] == 16 and result["classes"] == ["blue", "red"]


def test_nan_loss_stops_cleanly_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = engine.build_loss
    calls = {"n": 0}

    def poisoned(run):
        mixup, criterion = real(run)

        def loss(logits, target):  # finite for the first epoch (8 updates), then NaN
            calls["n"] += 1
            return criterion(logits, target) * (float("nan") if calls["n"] > 8 else 1.0)
        return mixup, loss

    monkeypatch.setattr(engine, "build_loss", poisoned)
    with pytest.raises(TrainingFailed, match="non-finite loss"):
        train(smoke_run("gelu"), tmp_path)
    result = json.loads((tmp_path / RESULT).read_text())
    assert result["status"] == "failed" and "non-finite loss" in result["reason"]
    assert torch.load(tmp_path / LAST, weights_only=True)["epoch"] == 1
    assert not (tmp_path / "model.safetensors").exists()


@pytest.mark.slow
def test_cli_rejects_bad_flag_before_any_work(tmp_path):
    bad = cli("+step=kernel", "net.act=swish", f"hydra.run.dir={tmp_path}")
    assert bad.returncode != 0 and "net.act='swish' is not allowed; choose one of: relu, gelu" in bad.stderr
    assert not (tmp_path / RESULT).exists()
    unknown = cli("+step=kernal", f"hydra.run.dir={tmp_path}")
    assert unknown.returncode != 0 and "kernel_11" in unknown.stderr  # Hydra lists the available steps


@pytest.mark.slow
def test_multirun_sweep_runs_every_job_and_a_rerun_skips_them(tmp_path):
    args = ["-m", "+step=baseline,layer_norm", "budget=smoke", "data.train_size=64", "data.val_size=32",
            f"hydra.sweep.dir={tmp_path}"]
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    results = sorted(tmp_path.glob("*/*/result.json"))
    assert [p.parts[-3] for p in results] == ["baseline", "layer_norm"]
    assert all(json.loads(p.read_text())["status"] == "finished" for p in results)
    stamps = [p.stat().st_mtime_ns for p in results]
    again = cli(*args)
    assert again.returncode == 0 and again.stdout.count("not retrained") == 2
    assert [p.stat().st_mtime_ns for p in results] == stamps
