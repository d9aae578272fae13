#!/bin/sh
# Copies a sweep's records (result.json, metrics.jsonl, .hydra/, multirun.yaml; no weights) into runs/NAME and
# redraws the report over every budget in runs/. From the repository root:
#   sh results/cifar10_proxy_3seeds/collect.sh 8ep /work/sweeps/cifar10_proxy_8ep/r50
#   sh results/cifar10_proxy_3seeds/collect.sh 2ep /work/sweeps/cifar10_proxy_2ep/r50
set -e
here=$(dirname "$0")
name=$1
src=$2
(cd "$src" && find . \( -name result.json -o -name metrics.jsonl -o -name multirun.yaml -o -path '*/.hydra/*.yaml' \) \
  -print) | while read -r f; do
  mkdir -p "$here/runs/$name/$(dirname "$f")" && cp "$src/$f" "$here/runs/$name/$f"
done
python -m ablate.report "$here/runs" out="$here"
