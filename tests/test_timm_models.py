"""Every step as a timm model (ablate.timm_models): made by timm.create_model, its stage features as timm's
backbones give them, and the endpoints' features equal to timm's after a weight port."""
import dataclasses
import subprocess
import sys

import pytest
import timm
import torch

import ablate.timm_models as timm_models
from ablate.complexity import PAPER_NET
from ablate.config import compose_config, net_config, regime_names, step_overrides
from stages import from_timm

from helpers import ROOT

NAMES = timm.list_models("ablate_*")
SMALL = {"width_multiplier": 0.25, "num_classes": 7}  # NetConfig fields set through create_model's kwargs


def test_every_step_file_and_regime_is_registered():
    steps = sorted(p.stem for p in (ROOT / "conf" / "step").glob("*.yaml"))
    assert set(NAMES) == {f"ablate_{regime}_{step}" for regime in regime_names() for step in steps}
    assert len(NAMES) == len(regime_names()) * len(steps)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_create_model_builds_the_step_as_its_config_composes_it(name):
    regime, step = timm_models.model_names()[name]
    model = timm.create_model(name, **SMALL)
    want = net_config(compose_config(step_overrides(step, regime, [*PAPER_NET, *(f"net.{k}={v}"
                                                                                 for k, v in SMALL.items())])))
    assert model.cfg == want
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    data = timm.data.resolve_data_config(model=model)
    assert data["input_size"] == (3, 224, 224) and data["crop_pct"] == 0.875
    assert data["interpolation"] == ("bilinear" if step == "baseline" else "bicubic")  # the step's recipe


@pytest.mark.parametrize("step", ["baseline", "separate_downsampling"])
def test_the_classifier_api_timms_scripts_read(step):
    """timm's train.py, validate.py and benchmark.py read num_classes and swap the classifier (tried: all three
    ran with the steps registered once these existed; benchmark.py failed on a missing num_classes before)."""
    model = timm.create_model(f"ablate_r50_{step}", **SMALL).eval()
    assert model.num_classes == 7 and model.get_classifier() is model.head.fc
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled = model.head.fc.in_features
        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.num_classes == 3 == model.cfg.num_classes
        model.reset_classifier(0)
        assert model(x).shape == (2, pooled) and model.num_classes == 0


@pytest.mark.parametrize("step", ["baseline", "separate_downsampling"])
def test_features_only_gives_each_stage_as_the_net_computes_it(step):
    net = timm.create_model(f"ablate_r50_{step}", **SMALL).eval()
    features = timm.create_model(f"ablate_r50_{step}", features_only=True, out_indices=(1, 2, 3), **SMALL).eval()
    features.load_state_dict({f"model.{k}": v for k, v in net.state_dict().items() if not k.startswith("head.")})
    assert features.feature_info.channels() == [w for w in net.cfg.stage_widths[1:]]
    assert features.feature_info.reduction() == [8, 16, 32]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = features(x)
        final, inter = net.forward_intermediates(x)
        stages, h = [], net.stem(x.contiguous(memory_format=net.memory_format))
        for stage in net.stages:
            stages.append(h := stage(h))
    assert [tuple(m.shape) for m in maps] == [(2, c, 64 // r, 64 // r) for c, r in
                                               zip(features.feature_info.channels(), [8, 16, 32])]
    assert all(torch.equal(a, b) for a, b in zip(maps, inter[1:])) and torch.equal(final, inter[-1])
    assert all(torch.equal(a, b) for a, b in zip(inter, stages))


@pytest.mark.parametrize("ours, theirs, their_indices", [
    ("ablate_r50_baseline", "resnet50", (1, 2, 3, 4)),  # timm's ResNet lists the stem's output first
    ("ablate_r50_separate_downsampling", "convnext_tiny", (0, 1, 2, 3)),
])
def test_endpoint_stage_features_equal_timms_after_a_port(ours, theirs, their_indices):
    torch.manual_seed(0)
    ref = timm.create_model(theirs).eval()
    features = timm.create_model(ours, features_only=True).eval()
    ported = {f"model.{k}": v for k, v in from_timm(ref.state_dict()).items() if not k.startswith("head.")}
    features.load_state_dict(ported)  # strict: every stage parameter of ours has timm's
    assert features.feature_info.channels() == [ref.feature_info[i]["num_chs"] for i in their_indices]
    assert features.feature_info.reduction() == [ref.feature_info[i]["reduction"] for i in their_indices]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        theirs_maps = ref.forward_intermediates(x, indices=list(their_indices), intermediates_only=True)
        for a, b in zip(features(x), theirs_maps, strict=True):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item()), (a - b).abs().max()


def test_what_the_nets_do_not_have_is_one_line():
    with pytest.raises(ValueError, match="ablate_r50_kernel has no pretrained weights"):
        timm.create_model("ablate_r50_kernel", pretrained=True)
    with pytest.raises(ValueError, match="drop_rate must be 0"):
        timm.create_model("ablate_r50_kernel", drop_rate=0.1, **SMALL)


@pytest.mark.slow
def test_a_timm_script_runs_with_the_steps_registered(tmp_path):
    """`python -m ablate.timm_models SCRIPT ARGS` runs SCRIPT as __main__ with its argv (as timm's train.py,
    validate.py and benchmark.py are run)."""
    script = tmp_path / "script.py"
    script.write_text("import sys, timm, torch\n"
                      "m = timm.create_model(sys.argv[1], width_multiplier=0.25, num_classes=3).eval()\n"
                      "print(__name__, m(torch.randn(1, 3, 64, 64)).shape[1])\n")
    out = subprocess.run([sys.executable, "-m", "ablate.timm_models", str(script), "ablate_r50_gelu"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["__main__", "3"] and "Overwriting" not in out.stderr


@pytest.mark.slow
def test_the_registry_composes_no_config_until_a_model_is_made():
    """Importing the hook registers names only (38 compositions would take seconds); a model's config is
    composed when it is made."""
    assert dataclasses.is_dataclass(timm.get_pretrained_cfg("ablate_r50_kernel"))
    code = ("import ablate.config as c; calls = []; compose = c.compose_config; "
            "c.compose_config = lambda *a, **k: calls.append(a) or compose(*a, **k); "
            "import timm, ablate.timm_models; print(len(calls)); "
            "timm.create_model('ablate_r50_kernel', width_multiplier=0.25); print(len(calls))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split() == ["0", "1"], out.stderr
