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


SMALL = ["data.train_size=64", "data.val_size=32"]  # 2 updates per epoch: CPU fp16 kernels are slow


def smoke(out, *extra: str) -> dict:
    run = run_config(compose_config(["+step=separate_downsampling", *SMOKE, "train.threads=1", *extra]))
    train(run, out)
    return json.loads((out / RESULT).read_text())


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    """The reference: the same run in fp32, NHWC, eager."""
    out = tmp_path_factory.mktemp("fp32")
    return smoke(out, *SMALL), load_file(out / "model.safetensors")


def _close_to(reference, out, result: dict, loss_tol: float, weight_tol: float) -> None:
    record, weights = reference
    assert result["status"] == "finished" and math.isfinite(result["final"]["loss"])
    assert result["identity_hash"] == record["identity_hash"]  # how it ran is not what it is
    assert abs(result["epochs"][0]["train_loss"] - record["epochs"][0]["train_loss"]) < loss_tol
    other = load_file(out / "model.safetensors")
    assert all(torch.allclose(weights[k], other[k], rtol=weight_tol, atol=weight_tol / 10) for k in weights)


@pytest.mark.parametrize("precision", ["bf16", pytest.param("fp16", marks=pytest.mark.slow)])
def test_mixed_precision_trains_on_cpu(tmp_path, fp32, precision):
    mixed = smoke(tmp_path, *SMALL, f"train.precision={precision}")
    assert mixed["segments"][0]["train"]["precision"] == precision
    _close_to(fp32, tmp_path, mixed, loss_tol=0.05, weight_tol=0.1)
    # autocast really ran: the same seed and data give other weights than fp32
    assert any(not torch.equal(fp32[1][k], v) for k, v in load_file(tmp_path / "model.safetensors").items())
    scaler = torch.load(tmp_path / LAST, weights_only=True)["scaler"]
    assert bool(scaler) == (precision == "fp16")  # the grad scaler runs (and is checkpointed) for fp16 only


def test_contiguous_layout_trains_like_channels_last(tmp_path, fp32):
    nchw = smoke(tmp_path, *SMALL, "train.channels_last=false")
    assert nchw["segments"][0]["train"]["channels_last"] is False
    # the same arithmetic in another memory layout: equal up to float32 rounding of other conv kernels
    _close_to(fp32, tmp_path, nchw, loss_tol=1e-3, weight_tol=1e-3)


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    shallow = [*SMALL, "net.depths=[1,1,1,1]"]  # compile time grows with the graph: one block per stage
    eager = smoke(tmp_path / "eager", *shallow), load_file(tmp_path / "eager" / "model.safetensors")
    compiled = smoke(tmp_path / "compiled", *shallow, "train.compile=true")
    _close_to(eager, tmp_path / "compiled", compiled, loss_tol=1e-3, weight_tol=1e-3)


@pytest.mark.slow  # trains four runs end to end
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
        smoke(tmp_path / f"n{images}", f"data.train_size={images}", "data.val_size=32", "net.depths=[1,1,1,1]")
        per_epoch[images] = len(calls) / 2
    assert 1 <= per_epoch[256] == per_epoch[512] <= 3, per_epoch  # >= 1: the end-of-epoch check was counted
    from ablate import engine
    assert all(callable(getattr(train_module, n, None) or getattr(engine, n, None)) for n in loop), \
        "a function of the loop was renamed: count its .item() calls under its new name"
    assert train_module.LOSS_CHECK_EVERY >= 50
