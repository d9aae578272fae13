"""What a run on 2 processes equals: the same command on 1 and on 2 gloo processes (torchrun, CPU, one thread each),
for ConvNeXt-T (LayerNorm) without per-sample random draws, with the recipe's drop path, with the recipe's batch
augmentation, and the BatchNorm ResNet-50. Prints the final val loss, top-1 and the largest weight difference relative to the weight's scale.

    python results/multiprocess/measure.py > results/multiprocess/measured.txt
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file

from ablate import REPO_ROOT
from ablate.provenance import provenance

# the proxies' light augmentation (crop + flip), a smoke-sized run
SMOKE = ["budget=smoke", "budget.augmentation=light", "data.train_size=256", "data.val_size=128", "train.threads=1"]
CASES = {
    "ConvNeXt-T (LayerNorm), crop + flip, no drop path": ["+step=separate_downsampling", "recipe.drop_path_rate=0"],
    "ConvNeXt-T, crop + flip, the recipe's drop path": ["+step=separate_downsampling"],
    "ConvNeXt-T, the recipe's augmentation (Mixup, CutMix, ...)": ["+step=separate_downsampling",
                                                                    "budget.augmentation=recipe"],
    "ResNet-50 (BatchNorm), classic recipe": ["+step=baseline"],
}


def run(out: Path, args: list[str], processes: int) -> dict:
    launcher = ["-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_port=29561"] \
        if processes > 1 else []
    done = subprocess.run([sys.executable, *launcher, "-m", "ablate", *args, *SMOKE, f"hydra.run.dir={out}"],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "result.json").read_text())


if __name__ == "__main__":
    print("# provenance:", json.dumps(provenance()))
    print("case | processes | val loss | top-1 | max |w1 - w2| / max |w1| over tensors")
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in CASES.items():
            case = list(CASES).index(name)
            one, two = Path(tmp) / f"case{case}_1", Path(tmp) / f"case{case}_2"
            r1, r2 = run(one, args, 1), run(two, args, 2)
            w1, w2 = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
            diff = max(((w1[k] - w2[k]).abs().max() / w1[k].abs().max().clamp_min(1e-12)).item()
                       for k in w1 if w1[k].is_floating_point())
            print(f"{name} | 1 | {r1['final']['loss']:.4f} | {r1['final']['top1']:.2f} |")
            print(f"{name} | 2 | {r2['final']['loss']:.4f} | {r2['final']['top1']:.2f} | {diff:.2e}")
