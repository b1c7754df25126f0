#!/bin/bash
# The methods side by side, the accuracy half (issue 15, item 4): test
# accuracy of IPS, attention sampling and the full-image CNN after the same
# fixed training budget (same epochs, same batch size, same small ats-style
# Megapixel MNIST set, the same seeds), each with its own training options:
#   ips: ResNet-18 (2 stages), 50-px patches, M = N/4, I = N, positional
#        encoding; AdamW lr 1e-3, wd 0, one warm-up epoch then cosine (the
#        IPS defaults);
#   ats: the stored low-resolution view (scale 0.12), 10 patches of 50 px,
#        the original's feature net; Adam lr 1e-3, clipnorm 1, constant rate
#        (the original's defaults, configs/ats_mnist.yaml);
#   cnn: ResNet-18 (2 stages) over the whole image; AdamW lr 1e-3, wd 0, one
#        warm-up epoch then cosine.
# One task (majority digit), lazy loading. Reads the last epoch's and the
# best epoch's test accuracy from each run's metrics.csv.
#
#   benchmarks/methods_accuracy.sh [--ipsnet build/apps/ipsnet] [--out /tmp/methods-acc]
#       [--side 300] [--n-train 192] [--n-test 96] [--epochs 8] [--B 16]
#       [--seeds "0"] [--methods "ips ats cnn"] [--device cpu] [--threads 0] [--reuse]
#
# --reuse: a run of OUT/runs that already has all its epochs is read, not
# trained again (to rebuild the table, or to add seeds or methods).
#
# Writes OUT/accuracy.md (a markdown table) and prints it. Needs the MNIST
# digits (scripts/get_mnist.sh).
set -euo pipefail
IPSNET=build/apps/ipsnet
OUT=/tmp/ipsnet-methods-acc
SIDE=300
NTRAIN=192
NTEST=96
EPOCHS=8
B=16
SEEDS="0"
METHODS="ips ats cnn"
DEVICE=cpu
THREADS=0
REUSE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --ipsnet) IPSNET=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --side) SIDE=$2; shift 2 ;;
    --n-train) NTRAIN=$2; shift 2 ;;
    --n-test) NTEST=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --B) B=$2; shift 2 ;;
    --seeds) SEEDS=$2; shift 2 ;;
    --methods) METHODS=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --reuse) REUSE=1; shift ;;
    *) echo "methods_accuracy.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
[ "$SIDE" -ge 100 ] || { echo "methods_accuracy.sh: --side $SIDE: expected >= 100 (two 50-px patches)" >&2; exit 2; }
mkdir -p "$OUT"
data="$OUT/data_${SIDE}_${NTRAIN}_${NTEST}"
if [ ! -d "$data" ]; then
  "$IPSNET" generate-data --style ats --width "$SIDE" --height "$SIDE" --n-train "$NTRAIN" --n-test "$NTEST" \
    --quiet "$data" >/dev/null
fi
N=$(( (SIDE / 50) * (SIDE / 50) ))
M=$(( N / 4 )); [ "$M" -ge 1 ] || M=1
common="n_epoch: $EPOCHS
lr: 0.001
wd: 0.0
B: $B
B_seq: $B
eager: False
n_chan_in: 1
patch_size: 50
patch_stride: 50
n_token: 1
M: $M
tasks:
  task0: {id: 0, name: majority, act_fn: softmax, metric: accuracy}"
table="| method | seed | test accuracy, last epoch | best epoch: test accuracy | train accuracy, last epoch | s per epoch (train) | note |
|---|---|---|---|---|---|---|"
for seed in $SEEDS; do
  for method in $METHODS; do
    cfg="$OUT/${method}.yaml"
    case $method in
      ips) printf 'method: ips\n%s\nn_epoch_warmup: 1\nI: %d\nuse_pos: true\nenc_type: resnet18\nn_res_blocks: 2\n' \
             "$common" "$N" > "$cfg" ;;
      ats) printf 'method: ats\n%s\nn_epoch_warmup: 0\noptimizer: adam\nclipnorm: 1.0\nlr_schedule: constant\nscale: 0\nn_patches: 10\nregularizer_strength: 0.0001\n' \
             "$common" > "$cfg" ;;
      cnn) printf 'method: cnn\n%s\nn_epoch_warmup: 1\nenc_type: resnet18\nn_res_blocks: 2\ncnn_scale: 1.0\n' \
             "$common" > "$cfg" ;;
      *) echo "methods_accuracy.sh: unknown method '$method' (ips, ats, cnn)" >&2; exit 2 ;;
    esac
    run="${method}_s${seed}"
    done_epochs=0
    if [ -f "$OUT/runs/$run/metrics.csv" ]; then
      done_epochs=$(awk -F, 'NR > 1 && $2 == "test"' "$OUT/runs/$run/metrics.csv" | wc -l)
    fi
    if [ "$REUSE" = 1 ] && [ "$done_epochs" -ge "$EPOCHS" ]; then
      :
    elif rm -rf "$OUT/runs/$run" && ! "$IPSNET" train --quiet --config "$cfg" \
         --set "data_dir=$data;out_dir=$OUT/runs;run_name=$run;device=$DEVICE;threads=$THREADS;seed=$seed" \
         > "$OUT/$run.out" 2>&1; then
      note=$( (grep -m1 "error" "$OUT/$run.out" || tail -n 1 "$OUT/$run.out") | sed 's/ \[.*\]$//; s/|/\\|/g')
      table+=$'\n'"| $method | $seed | - | - | - | - | $note |"
      continue
    fi
    # metrics.csv: epoch,split,task,loss,metric_name,metric,lr,seconds,images_per_s,peak_allocated_mib
    stats=$(awk -F, 'NR > 1 && $2 == "test" { last = $6; if ($6 > best) { best = $6; be = $1 } }
                     NR > 1 && $2 == "train" { tr = $6; s += $8; n++ }
                     END { printf "%.4f %d:%.4f %.4f %.1f", last, be, best, tr, s / n }' \
            "$OUT/runs/$run/metrics.csv")
    read -r last best train secs <<< "$stats"
    table+=$'\n'"| $method | $seed | $last | ${best/:/: } | $train | $secs | |"
  done
done
echo "$table" | tee "$OUT/accuracy.md"
