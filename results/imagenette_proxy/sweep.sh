#!/usr/bin/env bash
# The Imagenette proxy roadmap, 14 steps x 3 seeds, at the resolution and budget the rule chose (the experiment's
# defaults), as two one-thread streams, one per core, from a frozen work tree; resumable: rerun to continue.
# Stream A: seed 0 (14 jobs), then seed 2 of steps 0-6; stream B: seed 1, then seed 2 of steps 7-13, so a complete
# one-seed roadmap exists first.
WT=${WT:-/work/sweep-wt}         # a frozen work tree (git worktree add WT REVISION)
SWEEPS=${SWEEPS:-/work/sweeps}   # outside the work tree
S=$SWEEPS/imagenette_proxy
FIRST=baseline,recipe,stage_ratio,patchify_stem,depthwise,width,inverted_bottleneck
LAST=move_up_dwconv,kernel,gelu,fewer_activations,fewer_norms,layer_norm,separate_downsampling
cd $WT
run() { taskset -c $1 python -m ablate -m +experiment=imagenette_proxy "${@:3}" train.threads=1 hydra.sweep.dir=$S/$2; }
(
  run 0 a_seed0 +sweep=roadmap seed=0
  run 0 a_seed2 +step=$FIRST seed=2
) > $SWEEPS/logs/imagenette_a.log 2>&1 &
(
  run 1 b_seed1 +sweep=roadmap seed=1
  run 1 b_seed2 +step=$LAST seed=2
) > $SWEEPS/logs/imagenette_b.log 2>&1 &
wait
