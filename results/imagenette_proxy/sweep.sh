#!/usr/bin/env bash
# The Imagenette proxy roadmap, 14 steps x 3 seeds, at the resolution and budget the rule chose (the experiment's
# defaults), ImageNet-C robustness on a 500-image val subset measured at the end of each job, as two one-thread
# streams, one per core, from a frozen work tree. Resumable across sittings: the jobs whose finished records are
# committed under results/imagenette_proxy/runs/sweep/ are skipped, and a stream starts no job that its plan time
# (../imagenette_budget/plan.csv, x MARGIN) says cannot end before DEADLINE (seconds since the epoch; default none),
# so a sitting that ends loses no half-trained job.
# Stream A: seed 0 (14 jobs), then seed 2 of steps 0-6; stream B: seed 1, then seed 2 of steps 7-13, so a complete
# one-seed roadmap exists first. Stream C (core 0, for a sitting where stream A has run out): seed 2 of
# `inverted_bottleneck`, then seed 2 of steps 13 down to 7, so it meets stream B from the other end; a job one
# stream has finished is reused by the other, and a job it is running is refused by its run lock, which stops the
# stream that asked.
# Stream R (core R_CORE, seeds R_SEEDS in order): the first sitting's `baseline` jobs again, with robustness, into
# rerun/ beside the sweep's folders (their committed records, which have none, are not touched), with the forms
# the first runs' `auto` chose (train.pointwise_form=conv): with `auto`'s other choice a rerun ends elsewhere.
set -u
WT=${WT:-/work/sweep-wt}         # a frozen work tree (git worktree add WT REVISION)
SWEEPS=${SWEEPS:-/work/sweeps}   # outside the work tree
DEADLINE=${DEADLINE:-0}
MARGIN=${MARGIN:-1.25}
STREAMS=${STREAMS:-a b}          # which streams this call runs (a, b, c, r)
R_CORE=${R_CORE:-0}
R_SEEDS=${R_SEEDS:-0 1}
S=$SWEEPS/imagenette_proxy
HERE=$(cd "$(dirname "$0")" && pwd)
PLAN=$HERE/../imagenette_budget/plan.csv
FIRST="baseline recipe stage_ratio patchify_stem depthwise width inverted_bottleneck"
LAST="move_up_dwconv kernel gelu fewer_activations fewer_norms layer_norm separate_downsampling"
mkdir -p "$SWEEPS/logs"

planned_s() {  # the plan's one-thread job time of a step at 96 px, 16 epochs
  awk -F, -v step="$1" '!/^#/ && $1 == step && $2 == 0 && $6 == 96 && $22 == 16 {print $30; exit}' "$PLAN"
}

job() {  # core, sweep half, step, seed
  local out=$S/$2/$3/seed=$4 committed=$HERE/runs/sweep/$2/$3/seed=$4/result.json
  if [ "${2%%/*}" != rerun ] && [ -f "$committed" ] && grep -q '"status": "finished"' "$committed"; then
    echo "$(date -u +%FT%TZ) $3 seed=$4: finished record committed, skipped"; return 0
  fi
  if [ "$DEADLINE" -gt 0 ]; then
    local need; need=$(awk -v s="$(planned_s "$3")" -v m="$MARGIN" 'BEGIN {printf "%d", s * m}')
    if [ $(( $(date +%s) + need )) -gt "$DEADLINE" ]; then
      echo "$(date -u +%FT%TZ) $3 seed=$4: ${need} s planned does not end before the deadline; stream stops"
      return 1
    fi
  fi
  echo "$(date -u +%FT%TZ) $3 seed=$4: starting"
  (cd "$WT" && taskset -c "$1" python -m ablate +experiment=imagenette_proxy +step="$3" seed="$4" \
    eval.corruptions=imagenet_c eval.subset=500 train.threads=1 ${JOB_EXTRA:-} hydra.run.dir="'$out'")
}

stream() {  # core, then (half seed steps) triples
  local core=$1; shift
  while [ $# -ge 3 ]; do
    local half=$1 seed=$2 steps=$3; shift 3
    for step in $steps; do job "$core" "$half" "$step" "$seed" || return; done
  done
}

case " $STREAMS " in *" a "*)
  stream 0 a_seed0 0 "$FIRST $LAST" a_seed2 2 "$FIRST" >> "$SWEEPS/logs/imagenette_a.log" 2>&1 & ;; esac
case " $STREAMS " in *" b "*)
  stream 1 b_seed1 1 "$FIRST $LAST" b_seed2 2 "$LAST" >> "$SWEEPS/logs/imagenette_b.log" 2>&1 & ;; esac
case " $STREAMS " in *" c "*)
  stream 0 a_seed2 2 inverted_bottleneck b_seed2 2 "$(echo "$LAST" | tr ' ' '\n' | tac | tr '\n' ' ')" \
    >> "$SWEEPS/logs/imagenette_c.log" 2>&1 & ;; esac
case " $STREAMS " in *" r "*)
  for seed in $R_SEEDS; do JOB_EXTRA=train.pointwise_form=conv job "$R_CORE" rerun/$([ "$seed" = 0 ] && echo a || echo b)_seed$seed baseline "$seed" || break
  done >> "$SWEEPS/logs/imagenette_r$R_CORE.log" 2>&1 & ;; esac
wait
