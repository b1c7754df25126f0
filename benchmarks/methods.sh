#!/bin/bash
# The methods side by side (issue 15, item 4, the efficiency half): IPS,
# attention sampling and the full-image CNN on the same ats-style Megapixel
# MNIST data, for several canvas sides: seconds per optimizer step, images
# per second and peak memory allocated to tensors, from the trainer's own
# per-step lines (`log_every: 1`; the first step is left out of the mean).
# A method that refuses (the CNN's memory estimate) or fails gets its one
# error line in the table.
#
#   benchmarks/methods.sh [--ipsnet build/apps/ipsnet] [--out /tmp/methods]
#                         [--sides "500 1000 1500 3000"] [--steps 4] [--B 16]
#                         [--device cpu] [--threads 0]
#
# Writes OUT/results.md (a markdown table) and prints it. Needs the MNIST
# digits (scripts/get_mnist.sh). Settings: ips = ResNet-18 (2 stages),
# patches 50, M 100 (N/4 when N <= 100), I 100; ats = configs/ats_mnist.yaml
# (stored view at scale 0.12, 10 patches of 50); cnn = ResNet-18 (2 stages)
# over the whole image; one task (majority), lazy loading, wd 0.
set -euo pipefail
IPSNET=build/apps/ipsnet
OUT=/tmp/ipsnet-methods
SIDES="500 1000 1500 3000"
STEPS=4
B=16
DEVICE=cpu
THREADS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --ipsnet) IPSNET=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --sides) SIDES=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --B) B=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    *) echo "methods.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
common="n_epoch: 1
n_epoch_warmup: 0
lr: 0.001
wd: 0.0
grad_clip: 1.0
B: $B
B_seq: $B
eager: False
n_chan_in: 1
patch_size: 50
patch_stride: 50
n_token: 1
log_every: 1
eval_every: 0
tasks:
  task0: {id: 0, name: majority, act_fn: softmax, metric: accuracy}"
table="| side | method | s/step | img/s | peak allocated MiB | note |
|---|---|---|---|---|---|"
for S in $SIDES; do
  data="$OUT/data_$S"
  if [ ! -d "$data" ]; then
    "$IPSNET" generate-data --style ats --width "$S" --height "$S" --n-train $((B * STEPS)) --n-test 16 \
      --quiet "$data" >/dev/null
  fi
  N=$(( (S / 50) * (S / 50) ))
  M=100; [ "$N" -le 100 ] && M=$((N / 4))
  for method in ips ats cnn; do
    cfg="$OUT/${method}_$S.yaml"
    case $method in
      ips) printf 'method: ips\n%s\nM: %d\nI: 100\nuse_pos: true\nenc_type: resnet18\nn_res_blocks: 2\n' "$common" "$M" > "$cfg" ;;
      ats) printf 'method: ats\n%s\nM: %d\nscale: 0\nn_patches: 10\nregularizer_strength: 0.0001\n' "$common" "$M" > "$cfg" ;;
      cnn) printf 'method: cnn\n%s\nM: %d\nenc_type: resnet18\nn_res_blocks: 2\ncnn_scale: 1.0\n' "$common" "$M" > "$cfg" ;;
    esac
    run="${method}_$S"
    rm -rf "$OUT/runs/$run"
    note=""
    if ! "$IPSNET" train --quiet --config "$cfg" --set "data_dir=$data;out_dir=$OUT/runs;run_name=$run;device=$DEVICE;threads=$THREADS" \
         > "$OUT/$run.out" 2>&1; then
      note=$( (grep -m1 "error" "$OUT/$run.out" || tail -n 1 "$OUT/$run.out") | sed 's/ \[.*\]$//; s/|/\\|/g')
      table+=$'\n'"| $S | $method | - | - | - | $note |"
      continue
    fi
    stats=$(grep '^step ' "$OUT/runs/$run/train.log" | awk -F'|' '
      { n++; split($4, a, " "); ms = a[1]; split($6, p, " "); peak = p[2] + 0; if (peak > pk) pk = peak;
        if (n > 1) { s += ms; k++ } }
      END { if (k == 0) { k = 1; s = ms }; printf "%.2f %.2f %.1f", s / k / 1000, '"$B"' * 1000 / (s / k), pk }')
    read -r sps ips peak <<< "$stats"
    table+=$'\n'"| $S | $method | $sps | $ips | $peak | |"
  done
done
echo "$table" | tee "$OUT/results.md"
