#!/bin/sh
# Copies a sweep's records (result.json, metrics.jsonl, .hydra/, multirun.yaml; no weights) into runs/ and
# redraws the report. From the repository root:  sh results/cifar10_proxy_8ep/collect.sh [SWEEP_DIR]
set -e
here=$(dirname "$0")
src=${1:-/work/sweeps/cifar10_proxy_8ep/r50}
(cd "$src" && find . \( -name result.json -o -name metrics.jsonl -o -name multirun.yaml -o -path '*/.hydra/*.yaml' \) \
  -print) | while read -r f; do
  mkdir -p "$here/runs/$(dirname "$f")" && cp "$src/$f" "$here/runs/$f"
done
python -m ablate.report "$here/runs" out="$here"
