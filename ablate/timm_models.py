"""Every roadmap checkpoint and branch as a timm model. `import ablate.timm_models` registers `ablate_{regime}_{step}`
(e.g. `ablate_r50_kernel`, `ablate_r200_layer_norm`) for each declared step (conf/step/) and each regime, so

    timm.create_model("ablate_r50_kernel", num_classes=100)
    timm.create_model("ablate_r50_separate_downsampling", features_only=True, out_indices=(1, 2, 3))

build the paper's full-width net of that step, as `+step=NAME regime=REGIME` composes it, with a `pretrained_cfg`
naming its input size, mean/std and crop. Keyword arguments set NetConfig fields (num_classes, drop_path_rate,
in_chans, layer_scale_init, ...); no pretrained weights exist (a run's `model.safetensors` holds trained ones).
`python -m ablate.timm_models SCRIPT [ARGS]` runs one of timm's own scripts (train.py, validate.py,
benchmark.py) with these models registered, e.g. `... benchmark.py --model ablate_r50_kernel --img-size 224`.
"""
from __future__ import annotations

import runpy
import sys

from omegaconf import DictConfig, OmegaConf
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from stages import Net, NetConfig

from .complexity import PAPER_NET
from .config import CONF_DIR, compose_config, net_config, regime_names, step_overrides
from .roadmap import roadmap

PREFIX = "ablate"


def model_names() -> dict[str, tuple[str, str]]:
    """{timm name: (regime, step)} of every declared step and regime."""
    return {f"{PREFIX}_{regime}_{step}": (regime, step) for regime in regime_names() for step in roadmap().steps}


def step_config(regime: str, step: str) -> DictConfig:
    """The step as the paper trains it: its full-width ImageNet net, recipe and ImageNet evaluation."""
    return compose_config(step_overrides(step, regime, [*PAPER_NET, "data=imagenet"]))


def _data_cfg(data, num_classes: int) -> dict:
    """timm's view of an ImageNet evaluation (`data`: conf/data/imagenet.yaml's keys)."""
    size = data.image_size
    return {"url": "", "num_classes": num_classes, "input_size": (3, size, size), "pool_size": (size // 32, size // 32),
            "crop_pct": data.eval_crop_pct, "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
            "first_conv": "stem.conv", "classifier": "head.fc"}


def pretrained_cfg(cfg: DictConfig) -> dict:
    """What timm's data pipeline reads off a model: the input size, crop, interpolation and normalisation of the
    step's ImageNet evaluation (conf/data/imagenet.yaml and its recipe)."""
    return {**_data_cfg(cfg.data, cfg.net.num_classes), "interpolation": cfg.recipe.interpolation}


def _build(cfg: DictConfig, channels_last: bool = True, **net_kwargs) -> Net:
    """The step's net, any NetConfig field set by keyword (a bad one fails naming it)."""
    return Net(NetConfig.from_dict({**net_config(cfg).__dict__, **net_kwargs}), channels_last=channels_last)


def _entrypoint(name: str, regime: str, step: str):
    def create(pretrained: bool = False, **kwargs) -> Net:
        if pretrained:
            raise ValueError(f"{name} has no pretrained weights; load a trained run's model.safetensors instead")
        if kwargs.pop("drop_rate", 0.0):  # timm's train.py passes its --drop (0 by default)
            raise ValueError(f"{name} has no dropout before its classifier; drop_rate must be 0")
        cfg = step_config(regime, step)  # composed here, not at import: 34 compositions take seconds
        kwargs["pretrained_cfg_overlay"] = {**pretrained_cfg(cfg), **(kwargs.get("pretrained_cfg_overlay") or {})}
        stages = tuple(range(len(cfg.net.depths)))  # features_only's default: every stage, as timm's ConvNeXt
        return build_model_with_cfg(lambda **args: _build(cfg, **args), name, pretrained=False,
                                    feature_cfg={"feature_cls": "getter", "out_indices": stages}, **kwargs)
    create.__name__, create.__qualname__, create.__module__ = name, name, __name__
    create.__doc__ = f"timm entrypoint of ablate's {regime} {step} checkpoint."
    return create


def _registered_cfg(data, regime: str, step: str) -> dict:
    """The cfg timm lists before a model is made (the made model carries pretrained_cfg's, with its recipe's
    interpolation): the ImageNet evaluation every step shares."""
    return {**_data_cfg(data, 1000),
            "description": f"ablate: the {step} checkpoint of the {regime} roadmap (A ConvNet for the 2020s)"}


_NAMES = model_names()
_IMAGENET = OmegaConf.load(CONF_DIR / "data" / "imagenet.yaml")
default_cfgs = generate_default_cfgs({name: _registered_cfg(_IMAGENET, *rs) for name, rs in _NAMES.items()})
__all__ = ["model_names", "step_config", "pretrained_cfg", "main"]
if __name__ != "__main__":  # under `python -m`, the module registers them once, on import below
    for _name, (_regime, _step) in _NAMES.items():
        globals()[_name] = register_model(_entrypoint(_name, _regime, _step))


def main(argv: list[str]) -> int:
    """Runs a timm script (its path, then its arguments) as __main__, with every step registered."""
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m ablate.timm_models SCRIPT [ARGS]  (SCRIPT: timm's train.py, validate.py or "
              f"benchmark.py; models: {', '.join(sorted(_NAMES)[:3])}, ...)")
        return 0 if argv else 2
    sys.argv = list(argv)
    runpy.run_path(argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    from ablate.timm_models import main as registered_main
    sys.exit(registered_main(sys.argv[1:]))
