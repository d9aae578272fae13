#!/usr/bin/env bash
# The GPU checks, one prepared script of at most 8 minutes for a lent GPU machine, from the repository root:
#   OUT=DIR bash results/gpu/run.sh
# 1. tests/test_cuda.py (they skip on a machine without a GPU);
# 2. the endpoint benches (ResNet-50 and ConvNeXt-T beside timm's, 224 px, batch 128) in bf16 and channels-last,
#    eager, then with train.compile=true (both models compiled, timm's too: each row runs as its job says);
# 3. ablate.plan of the paper-budget roadmap (14 steps, the recipe's epochs and batch on 1,281,167 images a
#    epoch), measured at 224 px in bf16, channels-last, on synthetic images (no ImageNet travels to that machine).
# Each part has its own time limit, so one that breaks or hangs leaves the others' output.
# Pure-Python dependencies the machine lacks (hydra-core, omegaconf, antlr4, fvcore, iopath, yacs, termcolor, timm)
# travel as a folder .devsite/ (copied from a local install) put first on PYTHONPATH.
set -u
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/.devsite:$PWD${PYTHONPATH:+:$PYTHONPATH}
LOG=$OUT/run.log
part() {  # seconds, title, command...
  local limit=$1 title=$2; shift 2
  echo "== $title ($(date -u +%FT%TZ), limit ${limit} s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  echo "== rc ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$LOG"
}
part 20 environment bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv;
  python3 -c "import sys, torch, timm, hydra; print(sys.version.split()[0], torch.__version__, torch.version.cuda,
  torch.backends.cudnn.version(), timm.__version__, hydra.__version__, torch.cuda.get_device_name())"; nproc'
part 110 "tests/test_cuda.py" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
BENCH=(+step=baseline,separate_downsampling compare=timm device=cuda image_size=224 batch_size=128
       train.precision=bf16 train.channels_last=true timm_channels_last=true warmup=3 iters=10 repeats=5)
part 60 "endpoint bench, bf16, channels-last, eager" python3 -m ablate.bench "${BENCH[@]}" \
  out="$OUT/endpoints_224_bf16_eager.csv"
part 190 "endpoint bench, bf16, channels-last, compiled" python3 -m ablate.bench "${BENCH[@]}" train.compile=true \
  out="$OUT/endpoints_224_bf16_compile.csv"
part 90 "plan of the paper-budget roadmap" python3 -m ablate.plan +sweep=roadmap budget=paper data.image_size=224 \
  train_images=1281167 val_images=50000 train.precision=bf16 train.channels_last=true max_batch=256 \
  out="$OUT/plan_paper_bf16.csv"
