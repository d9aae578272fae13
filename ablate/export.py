"""ONNX export of a checkpoint in eval mode, checked against torch with onnxruntime.

    python -m ablate.export +step=NAME [regime=...] [net.KEY=VALUE ...] out=FILE.onnx [image_size=224] [--help]
    python -m ablate.export RUN_DIR out=FILE.onnx          # a trained run: its config and model.safetensors

torch's exporter (torch.export, the default since PyTorch 2.9) writes the graph with a dynamic batch axis; the file is
then run by onnxruntime on the CPU on the same random batch as the torch net, and refused (not written) unless the
outputs agree within `tolerance` of their scale.
"""
from __future__ import annotations

import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from stages import Net, NetConfig, build_net

from .cli import Command
from .config import CommandOptions, compose_config, run_config
from .errors import ConfigError
from .io import atomic_write_bytes
from .record import RESULT, WEIGHTS, read_record

INPUT, OUTPUT = "images", "logits"


class ExportFailed(RuntimeError):
    """torch could not export a net, or onnxruntime's outputs differ from torch's."""


@dataclass(frozen=True)
class ExportOptions(CommandOptions):
    out: str | None = None          # the .onnx file (required)
    image_size: int = 224           # the traced input's side (the batch axis stays dynamic)
    batch: int = 2                  # the checked batch
    tolerance: float = 1e-4         # onnxruntime vs torch: max |difference| over max |output|

    def check(self) -> None:
        self.require(bool(self.out) and str(self.out).endswith(".onnx"), "out", "a path ending in .onnx")
        self.require(self.image_size >= 32, "image_size", "an integer >= 32")
        self.require(self.batch >= 1, "batch", "a positive integer")
        self.require(self.tolerance > 0, "tolerance", "a positive number")


def export_onnx(net: Net, path: str | Path, image_size: int = 224, batch: int = 2, tolerance: float = 1e-4,
                name: str = "net") -> float:
    """Exports `net` (eval mode) to `path` and returns onnxruntime's max |difference| from torch over the max |output|
    on one random batch; raises ExportFailed, naming `name` and the operator where torch names one, and writes
    nothing, if the export fails or the difference exceeds `tolerance`."""
    import onnxruntime  # an optional dependency: only this command needs it
    net = net.eval()
    x = torch.randn(batch, net.cfg.in_chans, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = Path(tmp) / "net.onnx"
        try:
            torch.onnx.export(net, (x,), onnx_file, dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_shapes={"x": {0: "batch"}}, external_data=False, verbose=False)
        except Exception as e:  # the exporter's own errors are many kinds; all mean the same to the user
            op = re.search(r"(aten::\w+|aten\.\w+(?:\.\w+)?|torch\.ops\.[\w.]+)", str(e))
            where = f" at operator {op.group(1)}" if op else ""
            raise ExportFailed(f"{name}: ONNX export failed{where}: {str(e).strip().splitlines()[0]}") from None
        session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        ours = session.run([OUTPUT], {INPUT: x.numpy()})[0]
        with torch.no_grad():
            reference = net(x).numpy()
        error = float(np.abs(ours - reference).max() / np.abs(reference).max())
        if not error <= tolerance:
            raise ExportFailed(f"{name}: onnxruntime's outputs differ from torch's by {error:.2e} of their scale "
                               f"(tolerance {tolerance:g}); nothing written")
        atomic_write_bytes(Path(path), onnx_file.read_bytes())
    return error


def _net_of_run(run_dir: Path) -> tuple[Net, str]:
    """A trained run's net (its recorded config, its final weights) and its step name."""
    record = read_record(run_dir / RESULT)
    if not (run_dir / WEIGHTS).exists():
        raise ConfigError(f"{run_dir} has no {WEIGHTS} (the run has not finished); export a finished run")
    net = build_net(NetConfig.from_dict(record.config["net"]), channels_last=False)
    net.load_state_dict(load_file(run_dir / WEIGHTS))
    return net, record.step["name"]


def _export(*args) -> None:
    *run_dir, options, overrides = args
    if run_dir and overrides:
        raise ConfigError(f"{' '.join(overrides)}: a run directory's net is the one it trained; export either a run "
                          "or a +step=, not both")
    if run_dir:
        net, name = _net_of_run(Path(run_dir[0]))
    else:
        run = run_config(compose_config(overrides))
        net, name = build_net(run.net, channels_last=False), run.step["name"]
    error = export_onnx(net, options.out, options.image_size, options.batch, options.tolerance, name)
    print(f"{name}: {sum(p.numel() for p in net.parameters())} params -> {options.out} (input {INPUT}: N x "
          f"{net.cfg.in_chans} x {options.image_size} x {options.image_size}, N dynamic); onnxruntime = torch to "
          f"{error:.1e} of the output scale (tolerance {options.tolerance:g})")


COMMAND = Command(
    "python -m ablate.export", "Export a checkpoint to ONNX (eval mode), checked against torch with onnxruntime.",
    ExportOptions, overrides=True,
    examples=("python -m ablate.export +step=separate_downsampling net.num_classes=1000 out=convnext_t.onnx",
              "python -m ablate.export outputs/r50/kernel/seed=0 out=kernel.onnx"))
RUN_COMMAND = Command(COMMAND.prog, COMMAND.summary, ExportOptions, positional=("RUN_DIR",), overrides=True,
                      examples=COMMAND.examples)


def main(argv: list[str]) -> int:
    """A path argument exports that run; otherwise the overrides compose the net."""
    from_run = any(not a.startswith(("+", "~")) and Path(a).is_dir() for a in argv)
    return (RUN_COMMAND if from_run else COMMAND).main(argv, _export)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
