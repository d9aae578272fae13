#!/bin/sh
# Copies a sweep's records (result.json, metrics.jsonl, .hydra/, multirun.yaml; no weights) into DEST/runs/NAME and
# redraws DEST's report over every sweep in DEST/runs/. From the repository root:
#   sh results/collect.sh results/cifar10_proxy_3seeds 8ep /work/sweeps/cifar10_proxy_8ep/r50
#   sh results/collect.sh results/imagenette_proxy sweep /work/sweeps/imagenette_proxy
set -e
dest=$1
name=$2
src=$3
(cd "$src" && find . \( -name result.json -o -name metrics.jsonl -o -name multirun.yaml -o -path '*/.hydra/*.yaml' \) \
  -print) | while read -r f; do
  mkdir -p "$dest/runs/$name/$(dirname "$f")" && cp "$src/$f" "$dest/runs/$name/$f"
done
python -m ablate.report "$dest/runs" out="$dest"
