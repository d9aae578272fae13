"""How a layer runs, not what it computes.

Some layers can run in several forms with the same parameters and the same outputs to float rounding: a 1x1
conv as a oneDNN/cuDNN convolution or as a Linear on the NHWC view (timm ConvNeXt's form); a LayerNorm over
channels as F.layer_norm on the NHWC view (timm's permute form) or as explicit mean/variance over dim 1
(ConvNeXt's original channels-first code). Which is fastest depends on the machine, the layer's shape and the
layout (results/bench/), so a form is a run-time attribute of each layer, never part of NetConfig or of a run's
identity. `ablate.autotune` picks them by a timed trial.
"""
from __future__ import annotations

from torch import nn

# layer kind -> its forms, the first the default
FORMS: dict[str, tuple[str, ...]] = {"pointwise": ("conv", "linear"), "layer_norm": ("permute", "mean_var")}
AUTO = "auto"


def tunable_layers(net: nn.Module, kind: str) -> list[nn.Module]:
    """The layers of `net` that can run in the forms of `kind` (each has `form_kind`, `form`, `signature()`)."""
    return [m for m in net.modules() if getattr(m, "form_kind", None) == kind]


def set_forms(net: nn.Module, kind: str, form: str) -> None:
    if form not in FORMS[kind]:
        raise ValueError(f"unknown {kind} form {form!r}; choose one of: {', '.join(FORMS[kind])}")
    for m in tunable_layers(net, kind):
        m.form = form


def forms_in_use(net: nn.Module) -> dict[str, dict[str, int]]:
    """How many layers of each kind run in each form."""
    counts = {}
    for kind in FORMS:
        for m in tunable_layers(net, kind):
            counts.setdefault(kind, {}).setdefault(m.form, 0)
            counts[kind][m.form] += 1
    return counts
