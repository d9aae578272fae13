"""ONNX export: every step's graph runs in onnxruntime with torch's outputs; bad input and failures are one line."""
import onnxruntime
import pytest
import torch

from ablate.config import compose_config, run_config
from ablate.export import ExportFailed, export_onnx, main
from ablate.roadmap import roadmap
from stages import build_net

from helpers import TINY_RUN, cli, step_net

# one of each kind of layer: BatchNorm ResNet, LayerNorm ConvNeXt, GRN, a small-kernel branch
KINDS = ["baseline", "separate_downsampling", "grn", "kernel_31_rep"]


def _net(step: str, *extra: str):
    return build_net(run_config(compose_config([f"+step={step}", *extra])).net, channels_last=False)


@pytest.mark.parametrize("step", [*KINDS, *(pytest.param(s, marks=pytest.mark.slow) for s in roadmap().steps
                                           if s not in KINDS)])
def test_every_step_exports_and_onnxruntime_matches_torch(step, tmp_path):
    out = tmp_path / f"{step}.onnx"
    error = export_onnx(_net(step), out, image_size=64, name=step)
    assert error <= 1e-4 and out.stat().st_size > 10_000
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"images": torch.randn(3, 3, 64, 64).numpy()})[0]
    assert logits.shape == (3, 10)  # the batch axis is dynamic


@pytest.mark.slow
@pytest.mark.parametrize("step", ["baseline", "separate_downsampling"])
def test_the_endpoints_export_at_224(step, tmp_path):
    net = step_net(step, channels_last=False)  # the paper's full-width ImageNet net
    assert export_onnx(net, tmp_path / "e.onnx", image_size=224, batch=1, name=step) <= 1e-4


def test_a_failed_export_names_the_step_and_the_operator(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("Unsupported: aten::grid_sampler_3d is not in opset 18\nmore")
    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(ExportFailed) as err:
        export_onnx(_net("baseline"), tmp_path / "x.onnx", image_size=32, name="baseline")
    assert str(err.value) == ("baseline: ONNX export failed at operator aten::grid_sampler_3d: Unsupported: "
                              "aten::grid_sampler_3d is not in opset 18")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_cli_exports_a_trained_run_and_refuses_bad_input(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli("+step=separate_downsampling", *TINY_RUN, f"hydra.run.dir={run_dir}").returncode == 0
    assert main([str(run_dir), f"out={tmp_path / 'run.onnx'}", "image_size=32"]) == 0
    assert "separate_downsampling:" in capsys.readouterr().out and (tmp_path / "run.onnx").exists()
    assert main(["+step=baseline", f"out={tmp_path / 'x.txt'}"]) == 2
    assert "error: out=" in capsys.readouterr().err
    assert main([str(run_dir), "+step=baseline", f"out={tmp_path / 'y.onnx'}"]) == 2
    assert "export either a run or a +step=, not both" in capsys.readouterr().err
