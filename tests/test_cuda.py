"""The CUDA paths (NCCL, sync_bn, pinned memory, GPU autocast, peak memory and out-of-memory back-off). They skip
here with the reason; one `python -m pytest tests/test_cuda.py` on a GPU machine runs them."""
import json

import pytest
import torch

from ablate.config import compose_config, run_config
from ablate.distributed import World
from ablate.engine import build_training
from ablate.train import RESULT, train

from helpers import SMOKE, TINY_PLAN, cli
from test_plan import plan

GPUS = torch.cuda.device_count()
pytestmark = pytest.mark.skipif(GPUS == 0, reason="needs a CUDA GPU (none is visible)")


def smoke_run(*extra: str):
    return run_config(compose_config(["+step=separate_downsampling", *SMOKE, "train.device=cuda", *extra]))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_trains_on_the_gpu(tmp_path, precision):
    run = smoke_run(f"train.precision={precision}")
    result = train(run, tmp_path)
    assert result["status"] == "finished" and result["device"].startswith("cuda: ")
    assert result["final"]["loss"] < float("inf")
    assert next(iter(torch.load(tmp_path / "last.pt", weights_only=True)["model"].values())).is_cuda


def test_streamed_batches_are_pinned():
    run = smoke_run("data.pipeline=per_sample")
    t = build_training(run, torch.device("cuda"), World(), run.per_process_batch(1))
    assert t.loader.pin_memory and next(t.net.parameters()).is_cuda


def test_gpu_and_cpu_agree_in_fp32(tmp_path):
    args = ["+step=separate_downsampling", *SMOKE, "recipe.drop_path_rate=0", "recipe.mixup=0", "recipe.cutmix=0"]
    for device in ("cpu", "cuda"):
        train(run_config(compose_config([*args, f"train.device={device}"])), tmp_path / device)
    cpu, gpu = (json.loads((tmp_path / d / RESULT).read_text()) for d in ("cpu", "cuda"))
    assert abs(cpu["epochs"][0]["train_loss"] - gpu["epochs"][0]["train_loss"]) < 1e-2


@pytest.mark.skipif(GPUS < 2, reason="needs 2 CUDA GPUs for NCCL")
def test_nccl_two_gpus_with_sync_bn(tmp_path):
    args = ["+step=baseline", *SMOKE, "train.device=cuda", "train.sync_bn=true", f"hydra.run.dir={tmp_path}"]
    two = cli("--nproc_per_node=2", "--master_port=29544", "-m", "ablate", *args,
              module=("-m", "torch.distributed.run"))
    assert two.returncode == 0, two.stderr
    result = json.loads((tmp_path / RESULT).read_text())
    assert result["world_size"] == 2 and result["replica_divergence"] == 0.0


def test_plan_measures_peak_memory_and_backs_off_on_out_of_memory(tmp_path):
    table = plan("+step=baseline", "budget.width_multiplier=1.0", *SMOKE, *TINY_PLAN, "train.device=cuda",
                 f"out={tmp_path / 'fits.csv'}")
    assert table.fits.all() and (table.peak_mem_mib > 0).all()
    # ResNet-50 at 1024 px needs GiBs per image in training: 64 of them exceed any single GPU
    table = plan("+step=baseline", "budget.width_multiplier=1.0", *SMOKE, "data.image_size=1024", "data.train_size=64",
                 "data.val_size=8", "budget.batch_size=64", *TINY_PLAN, "train.device=cuda", f"out={tmp_path / 'oom.csv'}")
    row = table.iloc[0]
    assert not row.fits and row.measured_batch < 64
    assert row.accum_steps_needed * row.measured_batch >= 64
