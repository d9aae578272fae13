"""The parametric network: exact endpoints, every step trainable, speed-only options invisible."""
import pytest
import timm
import torch
from timm.layers.grn import GlobalResponseNorm
from torch import nn

from stages import from_timm, to_timm
from stages.forms import FORMS, forms_in_use, set_forms

from helpers import STEPS, step_net

ENDPOINTS = [  # (regime, step, timm model, timm family)
    ("r50", "baseline", "resnet50", "resnet"),
    ("r50", "separate_downsampling", "convnext_tiny", "convnext"),
    ("r50", "grn", "convnextv2_tiny", "convnext"),
    pytest.param("r200", "baseline", "resnet200", "resnet", marks=pytest.mark.slow),  # the big nets: full suite only
    pytest.param("r200", "separate_downsampling", "convnext_base", "convnext", marks=pytest.mark.slow),
    pytest.param("r200", "grn", "convnextv2_base", "convnext", marks=pytest.mark.slow),
]


def _randomize_norm_stats(model: nn.Module) -> None:
    """timm inits BN to the identity; random statistics make the comparison exercise every buffer."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(m.weight, 1.0, 0.2)
            nn.init.normal_(m.bias, 0.0, 0.2)
        elif isinstance(m, (nn.LayerNorm, GlobalResponseNorm)) or "gamma" in dict(m.named_parameters(recurse=False)):
            for p in m.parameters(recurse=False):
                nn.init.normal_(p, 0.5, 0.2)


@pytest.mark.parametrize("regime,step,timm_name,family", ENDPOINTS)
def test_endpoint_equals_timm(regime, step, timm_name, family):
    """Both port directions, and the outputs in eval mode (running statistics) and train mode (batch statistics, no
    drop path in either net) to float rounding."""
    ref = timm.create_model(timm_name).eval()
    _randomize_norm_stats(ref)
    net = step_net(step, regime, extra=["net.drop_path_rate=0"]).eval()  # timm's default: train mode compares
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in ref.parameters())

    net.load_state_dict(from_timm(ref.state_dict()))  # strict: every key and shape must match
    back = to_timm(net.state_dict(), family)
    assert back.keys() == ref.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in ref.state_dict().items())

    x = torch.randn(2, 3, 224, 224) if regime == "r50" else torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        ours, theirs = net(x), ref(x)
    assert theirs.abs().mean() > 1e-2  # a meaningful comparison, not two near-zero outputs
    # equal up to float32 rounding: our NHWC convolutions and fused residual sum in another order than timm's
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()
    # train mode (batch statistics) in float64: ResNet-200's BatchNorms over 2 images amplify float32 rounding to
    # 3e-3, which would hide a real difference; in float64 the nets agree to 1e-9
    net.double().train(), ref.double().train()
    with torch.no_grad():
        ours, theirs = net(x.double()), ref(x.double())
    assert (ours - theirs).abs().max() <= 1e-9 * theirs.abs().max()


@pytest.mark.parametrize("sizes", [(32,), pytest.param((64, 224), marks=pytest.mark.slow)], ids=["32", "64-224"])
@pytest.mark.parametrize("step", STEPS)
def test_every_step_runs_forward_and_backward(step, sizes):
    net = step_net(step, extra=["net.num_classes=10"]).train()
    for size in sizes:
        x = torch.randn(2, 3, size, size)
        out = net(x)
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        out.square().mean().backward()
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        net.zero_grad(set_to_none=True)


@pytest.mark.parametrize("step", STEPS)
def test_every_step_trains_on_cpu(step):
    """A few AdamW steps on one fixed batch lower the loss (the net can fit data at all)."""
    net = step_net(step, extra=["net.num_classes=4", "net.width_multiplier=0.25"]).train()  # quarter width: fast
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 4
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("step", ["baseline", "fewer_norms", "layer_norm", "separate_downsampling"])
def test_layer_forms_and_layout_change_nothing_but_rounding(step):
    """Every form of every tunable layer (1x1 conv vs NHWC Linear, the LayerNorm forms) and the activation
    layout (NCHW vs NHWC): same params, same state_dict, same outputs."""
    narrow = ["net.width_multiplier=0.25"]  # the forms' arithmetic does not depend on width; 16x fewer FLOPs
    reference_net = step_net(step, extra=narrow, channels_last=False).eval()
    _randomize_norm_stats(reference_net)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = reference_net(x)
    for kind, forms in FORMS.items():
        for form in forms:
            for channels_last in (False, True):
                net = step_net(step, extra=narrow, channels_last=channels_last).eval()
                net.load_state_dict(reference_net.state_dict())
                set_forms(net, kind, form)
                assert forms_in_use(net).get(kind, {form: 0}).keys() == {form}
                with torch.no_grad():
                    # equal up to float32 summation order (observed ~1e-6 of the output scale)
                    assert (net(x) - reference).abs().max() <= 1e-5 * reference.abs().max(), (kind, form)


@pytest.mark.parametrize("step", ["baseline", "separate_downsampling"])
def test_the_weights_follow_the_activations_layout(step):
    """A net built NHWC has its 4-d weights NHWC too, and set_layout moves both (the engine once trained NHWC
    activations with NCHW weights: 1.3x slower on the CIFAR proxy's `kernel` step)."""
    net = step_net(step, extra=["net.width_multiplier=0.25"])
    # weights with one input channel or a 1x1 kernel are both layouts at once: only the others can tell
    telling = [p for p in net.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2:] != (1, 1)]
    assert telling
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in telling)
    net.set_layout(False)
    assert all(p.is_contiguous() and not p.is_contiguous(memory_format=torch.channels_last) for p in telling)
    net.set_layout(True)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in telling)


def test_folded_batch_norm_follows_every_change_of_weights_and_statistics():
    """The folded weights kept between inference calls are made again after a training step (BatchNorm updates its
    statistics without a version bump), an optimizer step and a load_state_dict."""
    net = step_net("baseline", extra=["net.width_multiplier=0.25"])
    other = step_net("baseline", extra=["net.width_multiplier=0.25"]).eval()
    _randomize_norm_stats(other)
    x = torch.randn(4, 3, 32, 32)

    def folded_vs_separate() -> float:
        net.eval()
        outputs = []
        for form in FORMS["batch_norm"][::-1]:  # folded first: the kept weights, if stale, give it away
            set_forms(net, "batch_norm", form)
            with torch.inference_mode():
                outputs.append(net(x))
        return ((outputs[0] - outputs[1]).abs().max() / outputs[1].abs().max()).item()

    assert folded_vs_separate() <= 1e-5
    net.train()(x)  # the running statistics move
    assert folded_vs_separate() <= 1e-5
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    net.train()(x).square().mean().backward()
    optimizer.step()
    assert folded_vs_separate() <= 1e-5
    net.load_state_dict(other.state_dict())
    assert folded_vs_separate() <= 1e-5
    with torch.inference_mode():
        assert torch.allclose(net(x), other(x), rtol=1e-4, atol=1e-5)


def test_drop_path_and_layer_scale_follow_the_recipe():
    baseline, recipe = step_net("baseline"), step_net("recipe")
    assert not any("gamma" in k for k in baseline.state_dict())
    gammas = [v for k, v in recipe.state_dict().items() if k.endswith("layer_scale.gamma")]
    assert len(gammas) == 16 and all(torch.allclose(g, torch.full_like(g, 1e-6)) for g in gammas)
    rates = [b.drop_path_rate for s in recipe.stages for b in s.blocks]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.1) and rates == sorted(rates)  # linear 0 -> 0.1


@pytest.mark.parametrize("channels_last", [False, True])
def test_reparameterize_merges_the_small_kernels_and_keeps_the_outputs(channels_last):
    """RepLKNet's branch (kernel 31 beside a 5x5, each with its BatchNorm) merges into one 31x31 conv with a bias:
    eval-mode outputs equal before and after to float rounding, and no 5x5 kernel is left."""
    from stages import reparameterize
    from stages.layers import LargeKernelConv
    net = step_net("kernel_31_rep", extra=["net.width_multiplier=0.25", "net.num_classes=10"],
                   channels_last=channels_last).eval()
    _randomize_norm_stats(net)
    assert sum(isinstance(m, LargeKernelConv) for m in net.modules()) == sum(net.cfg.depths)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
    assert reparameterize(net) is net
    assert {m.kernel_size for m in net.modules() if isinstance(m, nn.Conv2d) and m.groups > 1} == {(31, 31)}
    with torch.no_grad():
        after = net(x)
    assert before.abs().mean() > 1e-2 and (after - before).abs().max() <= 1e-5 * before.abs().max()
