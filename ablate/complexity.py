"""Params and FLOPs of every roadmap step, beside the paper's numbers.

    python -m ablate.complexity [regime=r50|r200] [out=FILE.csv] [net.KEY=VALUE ...] [--help]

GFLOPs follow the paper's convention: multiply-adds of conv and linear layers only, 224x224, batch 1,
counted by fvcore. `fvcore_gflops` is fvcore's default total, which also counts norms and pooling.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
from fvcore.nn import FlopCountAnalysis
from hydra.core.override_parser.overrides_parser import OverridesParser

from stages import Net, NetConfig, build_net

from .cli import Command
from .config import CommandOptions, compose_config, net_config, step_overrides
from .errors import ConfigError
from .paper import paper_table
from .provenance import write_csv
from .roadmap import roadmap

PAPER_OPS = ("conv", "linear", "addmm", "matmul")  # fvcore's names for conv + linear multiply-adds
PAPER_NET = ["net.num_classes=1000", "net.width_multiplier=1.0"]  # ImageNet head, full width


def count(net: Net, image_size: int = 224) -> dict:
    """params, paper-convention GFLOPs and fvcore's default GFLOPs of one network (batch 1), traced in eval
    mode; the net's train/eval mode is left as it was."""
    x = torch.zeros(1, net.cfg.in_chans, image_size, image_size)
    was_training = net.training
    try:
        with warnings.catch_warnings():  # fvcore warns about every op it does not count
            warnings.simplefilter("ignore")
            flops = FlopCountAnalysis(net.eval(), x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            by_op = flops.by_operator()
            total = flops.total()
    finally:
        net.train(was_training)
    macs = sum(v for k, v in by_op.items() if k in PAPER_OPS)
    return {
        "params": sum(p.numel() for p in net.parameters()),
        "macs": int(macs),
        "gflops": macs / 1e9,
        "fvcore_gflops": total / 1e9,
    }


def counted_net(cfg: NetConfig) -> Net:
    """The net as a count needs it: its layers and shapes, not its weights' values. Its initialisation, half the
    time of a count at 224 px, is skipped: built on the meta device, then given uninitialised CPU memory."""
    with torch.device("meta"):
        net = build_net(cfg)
    return net.to_empty(device="cpu")


def run_complexity(cfg: NetConfig, image_size: int) -> dict:
    """What a run records: the trained net's params and GFLOPs at its input size, and GFLOPs in the paper's
    convention (the same net, at its width, with an ImageNet head at 224x224)."""
    trained = count(counted_net(cfg), image_size)
    paper = count(counted_net(cfg.replace(num_classes=1000)), 224)
    return {"params": trained["params"], "gflops": paper["gflops"], "fvcore_gflops": paper["fvcore_gflops"],
            "gflops_at_input": trained["gflops"]}


def complexity_table(regime: str = "r50", overrides: list[str] = ()) -> pd.DataFrame:
    """Every declared step's row in roadmap order, beside the paper's numbers where it has them (empty where not), or
    with `+step=A,B` in the overrides those steps' rows only."""
    steps, overrides = _chosen_steps(overrides)
    paper = paper_table(regime).set_index("step")
    rows = []
    for step in roadmap().steps.values():
        if steps is not None and step.name not in steps:
            continue
        net = counted_net(net_config(compose_config(step_overrides(step.name, regime, [*PAPER_NET, *overrides]))))
        theirs = paper.loc[step.name] if step.name in paper.index else {}
        rows.append({"index": step.index, "step": step.name, "adopted": step.adopted, **count(net),
                     "paper_gflops": theirs.get("gflops", float("nan")),
                     "paper_top1": theirs.get("top1", float("nan"))})
    return pd.DataFrame(rows)


def _chosen_steps(overrides: list[str]) -> tuple[set[str] | None, list[str]]:
    """(the steps a +step=A,B override names, or None for all; the other overrides). The table is of roadmap steps:
    +undo=/+only= (which name other nets) are refused, as is a step the roadmap does not have."""
    steps, rest = None, []
    for o in OverridesParser.create().parse_overrides(list(overrides)):
        if o.key_or_group in ("undo", "only"):
            raise ConfigError(f"{o.input_line}: the complexity table lists roadmap steps; choose them with +step=A,B")
        if o.key_or_group == "step" and o.get_key_element().startswith("+"):
            steps = set(o.sweep_string_iterator()) if o.is_sweep_override() else {str(o.value())}
        else:
            rest.append(o.input_line)
    known = roadmap().steps
    if steps is not None and steps - set(known):
        raise ConfigError(f"+step={','.join(sorted(steps - set(known)))} is not a declared step (conf/step/); "
                          f"choose from: {', '.join(known)}")
    return steps, rest


@dataclass(frozen=True)
class ComplexityOptions(CommandOptions):
    regime: Literal["r50", "r200"] = "r50"
    out: str | None = None      # CSV path (with provenance); none: print only


COMMAND = Command(
    "python -m ablate.complexity", "Params and GFLOPs (paper convention) of every roadmap step, beside the paper's.",
    ComplexityOptions, overrides=True,
    examples=("python -m ablate.complexity regime=r200 out=results/complexity/r200.csv",
              "python -m ablate.complexity net.kernel_size=5"))


def _print_table(options: ComplexityOptions, overrides: list[str]) -> None:
    table = complexity_table(options.regime, overrides)
    shown = table.assign(params_M=table.params / 1e6).drop(columns=["params", "macs"])
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if options.out:
        write_csv(table, options.out, float_format="%.6f")


def main(argv: list[str]) -> int:
    return COMMAND.main(argv, _print_table)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
