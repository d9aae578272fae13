"""How a layer runs, not what it computes.

Some layers can run in several forms with the same parameters and the same outputs to float rounding:
- `pointwise`: a 1x1 conv as a oneDNN/cuDNN convolution (`conv`) or as a Linear on the NHWC view (`linear`,
  timm ConvNeXt's form);
- `layer_norm`: a LayerNorm over channels as F.layer_norm on the NHWC view (`permute`, timm's form) or as explicit
  mean and variance over dim 1 (`mean_var`, ConvNeXt's original channels-first code);
- `batch_norm`: in eval mode, a BatchNorm after a conv applied on its own (`separate`) or folded into the conv's
  weight and bias (`folded`: one pass over the activations fewer); in training it is always `separate`, since
  it needs the batch's statistics.
Which is fastest depends on the machine, the layer's shape and the layout (results/bench/), so forms are run-time
attributes of each layer (`layer.forms[kind]`), never part of NetConfig or of a run's identity. `ablate.autotune`
picks them by timed trials.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the form names stand on plain Python, for the config schema
    from torch import nn

# layer kind -> its forms, the first the default
FORMS: dict[str, tuple[str, ...]] = {"pointwise": ("conv", "linear"), "layer_norm": ("permute", "mean_var"),
                                     "batch_norm": ("separate", "folded")}
EVAL_ONLY = ("batch_norm",)  # kinds whose forms differ only in eval mode
AUTO = "auto"


def default_forms(*kinds: str) -> dict[str, str]:
    return {kind: FORMS[kind][0] for kind in kinds}


def tunable_layers(net: nn.Module, kind: str) -> list[nn.Module]:
    """The layers of `net` that can run in the forms of `kind` (each has `forms`, a dict by kind, and
    `signature()`)."""
    return [m for m in net.modules() if kind in getattr(m, "forms", {})]


def set_forms(net: nn.Module, kind: str, form: str) -> None:
    if form not in FORMS[kind]:
        raise ValueError(f"unknown {kind} form {form!r}; choose one of: {', '.join(FORMS[kind])}")
    for m in tunable_layers(net, kind):
        m.forms[kind] = form


def forms_in_use(net: nn.Module) -> dict[str, dict[str, int]]:
    """How many layers of each kind run in each form."""
    counts = {}
    for kind in FORMS:
        for m in tunable_layers(net, kind):
            counts.setdefault(kind, {}).setdefault(m.forms[kind], 0)
            counts[kind][m.forms[kind]] += 1
    return counts
