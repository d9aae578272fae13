"""The benchmark runs our step and timm's reference side by side and writes a CSV with provenance.
(Its numbers are measurements, asserted by nobody: results/bench/ holds them.)"""
import pandas as pd
import pytest
import torch

from ablate.autotune import LAYOUTS
from ablate.bench import COMMAND, BenchConfig, build_models, compose_bench, main, run
from ablate.roadmap import roadmap
from stages import Net, from_timm

from helpers import TINY_BENCH


def bench(*argv: str):
    """python -m ablate.bench ARGV, in this process."""
    _, options, overrides = COMMAND.parse(list(argv))
    return run(options, overrides)


@pytest.mark.slow
def test_bench_compares_with_timm_and_writes_a_csv(tmp_path):
    table = bench("+step=baseline,separate_downsampling", "compare=timm", *TINY_BENCH, f"out={tmp_path / 'b.csv'}")
    assert list(table["mode"]) == ["infer"] * 2 + ["train"] * 2
    assert list(table.timm_model) == ["resnet50", "convnext_tiny"] * 2  # each step against its own reference
    assert (table.ratio > 0).all() and (table.img_s > 0).all() and (table.repeats == 2).all()
    written = pd.read_csv(tmp_path / "b.csv", comment="#")
    assert list(written.step) == ["baseline", "separate_downsampling"] * 2
    assert (tmp_path / "b.csv").read_text().startswith("# command:")


def test_bench_measures_the_same_networks_as_timm():
    for step, name in (("baseline", "resnet50"), ("separate_downsampling", "convnext_tiny")):
        (cfg,) = compose_bench([f"+step={step}"]).values()
        models = build_models(cfg, BenchConfig(compare="timm"))
        ours, ref = models["ours"], models[name]
        assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
        for k, v in ref.state_dict().items():
            if k.endswith("gamma"):  # LayerScale starts at 1e-6: give the residual branches a visible weight
                v.normal_(0.5, 0.2)
        ours.load_state_dict(from_timm(ref.state_dict()))
        x = torch.randn(8, 3, 64, 64)
        for training in (False, True):  # training: batch statistics, and the same drop-path draws per seed
            ours.train(training)
            ref.train(training)
            outputs = []
            for model in (ours, ref):
                torch.manual_seed(0)
                outputs.append(model(x))
            torch.testing.assert_close(*outputs, rtol=1e-4, atol=1e-4)
        if step == "separate_downsampling":  # ConvNeXt-T trains with drop path: another seed drops others
            torch.manual_seed(1)
            assert not torch.allclose(ours(x), outputs[0], rtol=1e-3, atol=1e-3)


def test_jobs_of_one_step_keep_their_own_numbers(tmp_path):
    """Two settings of one step are two jobs, each named by what tells it apart (once, both rows carried the
    last job's numbers under the step's name)."""
    jobs = compose_bench(["+step=separate_downsampling", "train.pointwise_form=conv,linear", "seed=0"])
    assert list(jobs) == ["separate_downsampling train.pointwise_form=conv",
                          "separate_downsampling train.pointwise_form=linear"]
    # a null beside a value tells jobs apart too (once dropped as NaN, and 4 jobs ran as 2)
    assert list(compose_bench(["+step=baseline,recipe", "net.layer_scale_init=null,1e-6"])) == [
        "baseline net.layer_scale_init=null", "baseline net.layer_scale_init=1e-06",
        "recipe net.layer_scale_init=null", "recipe net.layer_scale_init=1e-06"]
    table = bench("+step=separate_downsampling", "train.pointwise_form=conv,linear", "modes=[infer]", *TINY_BENCH,
                  "budget.width_multiplier=0.25", f"out={tmp_path / 'b.csv'}")
    assert list(table.job) == list(jobs) and list(table.step) == ["separate_downsampling"] * 2
    assert table.img_s.nunique() == 2  # measured apart
    assert [f.split("; ")[1] for f in table.forms] == ["pointwise: conv 36", "pointwise: linear 36"]
    assert {f.split("; ")[0] for f in table.forms} <= {f"layout: {name}" for name in LAYOUTS}  # what the trial chose


def test_every_mode_runs_with_the_precision_its_row_names(monkeypatch, tmp_path):
    """A bf16 row ran under bf16 autocast in every mode (the e2e rows once ran in fp32 under a bf16 label)."""
    seen = []

    def record(module, args):
        if isinstance(module, Net):
            seen.append((module.training, torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu")))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        table = bench("+step=separate_downsampling", "train.precision=bf16", "modes=[infer,train,step,e2e]", *TINY_BENCH,
                      "budget.width_multiplier=0.25", "num_classes=10", f"out={tmp_path / 'b.csv'}")
    finally:
        handle.remove()
    assert list(table["mode"]) == ["infer", "train", "step", "e2e"] and set(table.precision) == {"bf16"}
    # every forward of our net, in all four modes (and the layer-form probes)
    assert {dtype for _, dtype in seen} == {torch.bfloat16}
    assert sum(not training for training, _ in seen) >= 2 and sum(training for training, _ in seen) >= 3 * 2


def test_bench_expands_a_sweep_and_names_bad_input(capsys):
    assert list(compose_bench(["+sweep=kernels"])) == roadmap().study("kernel")
    endpoints = compose_bench(["+step=baseline,separate_downsampling", "net.kernel_size=5"])
    assert list(endpoints) == ["baseline", "separate_downsampling"]
    assert {c.net.kernel_size for c in endpoints.values()} == {5}
    assert main(["+step=gelu", "compare=timm"]) == 2
    err = capsys.readouterr().err
    assert "gelu" in err and "baseline, separate_downsampling" in err
    assert main(["modes=[infer,fly]"]) == 2
    assert "modes=['infer', 'fly'] is not allowed" in capsys.readouterr().err


@pytest.mark.slow
def test_deploy_rows_run_onnxruntime_beside_torch_in_one_rotation(tmp_path, monkeypatch):
    """modes=[infer,onnx]: each step once in torch eager and once exported and run by onnxruntime (fp32, NCHW),
    alternating block by block; the onnx row carries the ratio to its own step's infer row."""
    import onnxruntime
    runs = []
    run_onnx = onnxruntime.InferenceSession.run
    monkeypatch.setattr(onnxruntime.InferenceSession, "run", lambda self, *a, **k: runs.append(1) or run_onnx(
        self, *a, **k))
    table = bench("+step=baseline,layer_norm", "modes=[infer,onnx]", *TINY_BENCH, "budget.width_multiplier=0.25",
                  "train.precision=bf16", f"out={tmp_path / 'b.csv'}")
    assert list(table["mode"]) == ["infer", "infer", "onnx", "onnx"]
    deployed = table[table["mode"] == "onnx"]
    assert deployed.runtime.str.startswith("onnxruntime ").all() and set(deployed.precision) == {"fp32"}
    assert not deployed.channels_last.any() and (deployed.onnx_over_infer > 0).all()
    assert set(table[table["mode"] == "infer"].precision) == {"bf16"}  # torch rows keep the job's own precision
    # per step: the export's check, the first block (warmup=1 + iters=1), repeats=2 blocks of 1 warm-up + 1 iter
    assert len(runs) == 2 * (1 + (1 + 1) + 2 * (1 + 1))
