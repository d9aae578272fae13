"""Every train.* path this machine can run: mixed precision (bf16; fp16 with its grad scaler), NCHW, compile, and a
training loop that reads nothing back from the device per step. (CUDA-only paths: tests/test_cuda.py.)"""
import json
import math
import sys

import pytest
import torch
from safetensors.torch import load_file

import ablate.train as train_module
from ablate.config import compose_config, run_config
from ablate.train import LAST, RESULT, train

from helpers import SMOKE


def smoke(tmp_path, name: str, *extra: str) -> dict:
    run = run_config(compose_config(["+step=separate_downsampling", *SMOKE, "train.threads=1", *extra]))
    train(run, tmp_path / name)
    return json.loads((tmp_path / name / RESULT).read_text())


def _weights(tmp_path, name: str) -> dict:
    return load_file(tmp_path / name / "model.safetensors")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_cpu(tmp_path, precision):
    small = ["data.train_size=64", "data.val_size=32"]  # CPU fp16 kernels are slow: 2 updates per epoch
    fp32 = smoke(tmp_path, "fp32", *small)
    mixed = smoke(tmp_path, precision, *small, f"train.precision={precision}")
    assert mixed["status"] == "finished" and math.isfinite(mixed["final"]["loss"])
    assert mixed["segments"][0]["train"]["precision"] == precision
    assert mixed["identity_hash"] == fp32["identity_hash"]  # how it ran is not what it is
    # autocast really ran: the same seed and data give other weights than fp32, yet close ones
    a, b = _weights(tmp_path, "fp32"), _weights(tmp_path, precision)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert abs(mixed["epochs"][0]["train_loss"] - fp32["epochs"][0]["train_loss"]) < 0.05
    scaler = torch.load(tmp_path / precision / LAST, weights_only=True)["scaler"]
    assert bool(scaler) == (precision == "fp16")  # the grad scaler runs (and is checkpointed) for fp16 only


def test_contiguous_layout_trains_like_channels_last(tmp_path):
    nhwc = smoke(tmp_path, "nhwc")
    nchw = smoke(tmp_path, "nchw", "train.channels_last=false")
    assert nchw["segments"][0]["train"]["channels_last"] is False
    # the same arithmetic in another memory layout: equal up to float32 rounding of other conv kernels
    assert abs(nchw["epochs"][0]["train_loss"] - nhwc["epochs"][0]["train_loss"]) < 1e-3
    a, b = _weights(tmp_path, "nhwc"), _weights(tmp_path, "nchw")
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-4) for k in a)


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    eager = smoke(tmp_path, "eager")
    compiled = smoke(tmp_path, "compiled", "train.compile=true")
    assert compiled["status"] == "finished"
    assert abs(compiled["epochs"][0]["train_loss"] - eager["epochs"][0]["train_loss"]) < 1e-3
    a, b = _weights(tmp_path, "eager"), _weights(tmp_path, "compiled")
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-4) for k in a)


def test_training_loop_reads_back_from_the_device_per_epoch_not_per_step(tmp_path, monkeypatch):
    """`.item()` is a host synchronisation (it serialises a CUDA step): the loop calls it a fixed number of times
    per epoch (the end-of-epoch loss check and sums), however many updates the epoch has."""
    loop = {"_train_epoch", "train_step", "_check_finite"}
    calls = []
    item = torch.Tensor.item

    def counted(self):
        caller = sys._getframe(1).f_code.co_name
        if caller in loop:
            calls.append(caller)
        return item(self)

    monkeypatch.setattr(torch.Tensor, "item", counted)
    per_epoch = {}
    for images in (256, 512):  # 8 and 16 updates per epoch: 2 epochs stay below LOSS_CHECK_EVERY
        calls.clear()
        smoke(tmp_path, f"n{images}", f"data.train_size={images}")
        per_epoch[images] = len(calls) / 2
    assert per_epoch[256] == per_epoch[512] <= 3, per_epoch
    assert train_module.LOSS_CHECK_EVERY >= 50
