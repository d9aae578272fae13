"""Port state_dicts between timm's reference endpoints and `Net`, in both directions.

timm `resnet50`/`resnet200`       <-> the `baseline` step of the r50/r200 regime;
timm `convnext_tiny`/`convnext_base` <-> the `separate_downsampling` step;
timm `convnextv2_tiny`/`convnextv2_base` <-> the `grn` step (the same keys and a GRN in each block's MLP).
A user with timm weights on disk loads them with `net.load_state_dict(from_timm(sd))`.
"""
from __future__ import annotations

import re

import torch

# Symmetric (timm, ours) name templates. {stage} counts from 0, {layer} is timm ResNet's stage counted
# from 1, {block} is the block index, {p} the parameter or buffer name.
RESNET_KEYS = [
    ("conv1.{p}", "stem.conv.{p}"),
    ("bn1.{p}", "stem.norm.{p}"),
    ("layer{layer}.{block}.conv1.{p}", "stages.{stage}.blocks.{block}.pw1.conv.{p}"),
    ("layer{layer}.{block}.bn1.{p}", "stages.{stage}.blocks.{block}.pw1.norm.{p}"),
    ("layer{layer}.{block}.conv2.{p}", "stages.{stage}.blocks.{block}.spatial.conv.{p}"),
    ("layer{layer}.{block}.bn2.{p}", "stages.{stage}.blocks.{block}.spatial.norm.{p}"),
    ("layer{layer}.{block}.conv3.{p}", "stages.{stage}.blocks.{block}.pw2.conv.{p}"),
    ("layer{layer}.{block}.bn3.{p}", "stages.{stage}.blocks.{block}.pw2.norm.{p}"),
    ("layer{layer}.{block}.downsample.0.{p}", "stages.{stage}.blocks.{block}.shortcut.conv.{p}"),
    ("layer{layer}.{block}.downsample.1.{p}", "stages.{stage}.blocks.{block}.shortcut.norm.{p}"),
    ("fc.{p}", "head.fc.{p}"),
]
CONVNEXT_KEYS = [
    ("stem.0.{p}", "stem.conv.{p}"),
    ("stem.1.{p}", "stem.norm.{p}"),
    ("stages.{stage}.downsample.0.{p}", "stages.{stage}.downsample.norm.{p}"),
    ("stages.{stage}.downsample.1.{p}", "stages.{stage}.downsample.conv.{p}"),
    ("stages.{stage}.blocks.{block}.gamma", "stages.{stage}.blocks.{block}.layer_scale.gamma"),
    ("stages.{stage}.blocks.{block}.conv_dw.{p}", "stages.{stage}.blocks.{block}.spatial.conv.{p}"),
    ("stages.{stage}.blocks.{block}.norm.{p}", "stages.{stage}.blocks.{block}.spatial.norm.{p}"),
    ("stages.{stage}.blocks.{block}.mlp.fc1.{p}", "stages.{stage}.blocks.{block}.pw1.conv.{p}"),
    ("stages.{stage}.blocks.{block}.mlp.fc2.{p}", "stages.{stage}.blocks.{block}.pw2.conv.{p}"),
    ("stages.{stage}.blocks.{block}.mlp.grn.{p}", "stages.{stage}.blocks.{block}.grn.{p}"),
    ("head.norm.{p}", "head.norm.{p}"),
    ("head.fc.{p}", "head.fc.{p}"),
]
FAMILIES = {"resnet": RESNET_KEYS, "convnext": CONVNEXT_KEYS}
# timm runs ConvNeXt's 1x1 convs as Linear (weight (out, in)); ours keep the Conv2d shape (out, in, 1, 1)
_TIMM_LINEAR_WEIGHT = re.compile(r"stages\.\d+\.blocks\.\d+\.mlp\.fc\d\.weight")


def _regex(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for name, part in (("layer", r"\d+"), ("stage", r"\d+"), ("block", r"\d+"), ("p", r"[^.]+")):
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{part})")
    return re.compile(pattern)


def _translate(key: str, rules: list[tuple[str, str]]) -> str:
    for source, target in rules:
        m = _regex(source).fullmatch(key)
        if m:
            fields = m.groupdict()
            if "layer" in fields:
                fields["stage"] = int(fields["layer"]) - 1
            elif "stage" in fields:
                fields["layer"] = int(fields["stage"]) + 1
            return target.format(**fields)
    raise KeyError(f"no rule ports the key {key!r}")


def timm_family(state_dict) -> str:
    if "conv1.weight" in state_dict:
        return "resnet"
    if "stem.0.weight" in state_dict:
        return "convnext"
    raise ValueError("not a timm resnet or convnext state_dict (it has neither 'conv1.weight' nor 'stem.0.weight')")


def from_timm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm resnet/convnext state_dict -> `Net` state_dict."""
    rules = FAMILIES[timm_family(state_dict)]
    return {_translate(k, rules): v[:, :, None, None] if _TIMM_LINEAR_WEIGHT.fullmatch(k) else v
            for k, v in state_dict.items()}


def to_timm(state_dict: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """`Net` state_dict -> timm state_dict of `family` ('resnet' or 'convnext')."""
    if family not in FAMILIES:
        raise ValueError(f"family={family!r} is not allowed; choose one of: {', '.join(FAMILIES)}")
    rules = [(ours, theirs) for theirs, ours in FAMILIES[family]]
    out = {}
    for key, value in state_dict.items():
        new = _translate(key, rules)
        out[new] = value.flatten(1) if _TIMM_LINEAR_WEIGHT.fullmatch(new) else value
    return out
