#!/bin/bash
# Proxy Attention against plain training (issue 16, item 4): test accuracy of
# the full-image CNN and of IPS trained for the same number of epochs with and
# without proxy steps, on a small MNIST-on-canvas set (one digit per 112x112
# image, bilinear, with line noise: `generate-data --style mnist`), a few seeds.
#
# Variants (--variants):
#   none    no proxy step;
#   later   the schedule [E/2, "p", E/2] with the later code's defaults:
#           Grad-CAM++ (cnn) or the method's attention (ips), 20 % of the
#           misclassified training images, blended, tau 0.85, lambda 0.1,
#           proxies added to the set;
#   readme  the README's rule: the same schedule, pixels over 0.008 of the
#           normalised map set to 0, 20 % of the misclassified added.
# Everything else is the same per method: ResNet-18 (2 stages), AdamW lr 1e-3,
# wd 0, one warm-up epoch then cosine, B 16, the majority digit (10 classes).
# IPS: 28-px patches, N 16, M 4, I 16.
#
#   benchmarks/proxy_attention.sh [--ipsnet build/apps/ipsnet] [--out /tmp/ipsnet-proxy]
#       [--side 112] [--n-train 400] [--n-test 300] [--epochs 6] [--seeds "0 1 2"]
#       [--methods "cnn ips"] [--variants "none later readme"] [--threads 0] [--reuse]
#
# Writes OUT/proxy_attention.md (one row per run and a mean per method and
# variant) and prints it. Needs the MNIST digits (scripts/get_mnist.sh).
set -euo pipefail
IPSNET=build/apps/ipsnet
OUT=/tmp/ipsnet-proxy
SIDE=112
NTRAIN=400
NTEST=300
EPOCHS=6
SEEDS="0 1 2"
METHODS="cnn ips"
VARIANTS="none later readme"
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
    --seeds) SEEDS=$2; shift 2 ;;
    --methods) METHODS=$2; shift 2 ;;
    --variants) VARIANTS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --reuse) REUSE=1; shift ;;
    *) echo "proxy_attention.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
[ "$EPOCHS" -ge 2 ] || { echo "proxy_attention.sh: --epochs $EPOCHS: expected >= 2 (epochs before and after the proxy step)" >&2; exit 2; }
[ "$SIDE" -ge 56 ] || { echo "proxy_attention.sh: --side $SIDE: expected >= 56 (two 28-px patches)" >&2; exit 2; }
mkdir -p "$OUT"
data="$OUT/data_${SIDE}_${NTRAIN}_${NTEST}"
if [ ! -d "$data" ]; then
  "$IPSNET" generate-data --style mnist --width "$SIDE" --height "$SIDE" --n-noise 3 --n-train "$NTRAIN" \
    --n-test "$NTEST" --quiet "$data" >/dev/null
fi
first=$(( EPOCHS / 2 ))
second=$(( EPOCHS - first ))
common="n_epoch: $EPOCHS
n_epoch_warmup: 1
lr: 0.001
wd: 0.0
B: 16
B_seq: 16
eager: False
n_chan_in: 1
patch_size: 28
patch_stride: 28
n_token: 1
M: 4
I: 16
enc_type: resnet18
n_res_blocks: 2
tasks:
  task0: {id: 0, name: majority, act_fn: softmax, metric: accuracy}"
table="| method | variant | seed | test accuracy, last epoch | best epoch: test accuracy | train accuracy, last epoch | proxies (misclassified) | s per epoch (train) |
|---|---|---|---|---|---|---|---|"
declare -A sum count
for method in $METHODS; do
  for variant in $VARIANTS; do
    cfg="$OUT/${method}_${variant}.yaml"
    printf 'method: %s\n%s\n' "$method" "$common" > "$cfg"
    case $variant in
      none) ;;
      later) printf 'proxy_attention:\n  schedule: [%d, "p", %d]\n' "$first" "$second" >> "$cfg" ;;
      readme) printf 'proxy_attention:\n  schedule: [%d, "p", %d]\n  threshold: 0.008\n  replace: zero\n' \
                "$first" "$second" >> "$cfg" ;;
      *) echo "proxy_attention.sh: unknown variant '$variant' (none, later, readme)" >&2; exit 2 ;;
    esac
    for seed in $SEEDS; do
      run="${method}_${variant}_s${seed}"
      done_epochs=0
      if [ -f "$OUT/runs/$run/metrics.csv" ]; then
        done_epochs=$(awk -F, 'NR > 1 && $2 == "test"' "$OUT/runs/$run/metrics.csv" | wc -l)
      fi
      if [ "$REUSE" = 1 ] && [ "$done_epochs" -ge "$EPOCHS" ]; then
        :
      elif rm -rf "$OUT/runs/$run" && ! "$IPSNET" train --quiet --config "$cfg" \
           --set "data_dir=$data;out_dir=$OUT/runs;run_name=$run;device=cpu;threads=$THREADS;seed=$seed" \
           > "$OUT/$run.out" 2>&1; then
        echo "proxy_attention.sh: run $run failed:" >&2
        tail -n 3 "$OUT/$run.out" >&2
        exit 1
      fi
      # metrics.csv: epoch,split,task,loss,metric_name,metric,lr,seconds,images_per_s,peak_allocated_mib[,proxy_cycle,train_images]
      stats=$(awk -F, 'NR > 1 && $2 == "test" { last = $6; if ($6 > best) { best = $6; be = $1 } }
                       NR > 1 && $2 == "train" { tr = $6; s += $8; n++ }
                       END { printf "%.4f %d:%.4f %.4f %.1f", last, be, best, tr, s / n }' \
              "$OUT/runs/$run/metrics.csv")
      read -r last best train secs <<< "$stats"
      proxies="-"
      if [ -f "$OUT/runs/$run/metrics.jsonl" ] && grep -q '"proxy_step"' "$OUT/runs/$run/metrics.jsonl"; then
        proxies=$(grep '"proxy_step"' "$OUT/runs/$run/metrics.jsonl" |
                  sed 's/.*"candidates": \([0-9]*\), "changed": \([0-9]*\).*/\2 (\1)/' | paste -sd+)
      fi
      table+=$'\n'"| $method | $variant | $seed | $last | ${best/:/: } | $train | $proxies | $secs |"
      sum[$method.$variant]=$(awk -v a="${sum[$method.$variant]:-0}" -v b="$last" 'BEGIN { printf "%.6f", a + b }')
      count[$method.$variant]=$(( ${count[$method.$variant]:-0} + 1 ))
    done
  done
done
table+=$'\n\n'"| method | variant | seeds | mean test accuracy, last epoch |
|---|---|---|---|"
for method in $METHODS; do
  for variant in $VARIANTS; do
    n=${count[$method.$variant]:-0}
    [ "$n" -gt 0 ] || continue
    mean=$(awk -v a="${sum[$method.$variant]}" -v n="$n" 'BEGIN { printf "%.4f", a / n }')
    table+=$'\n'"| $method | $variant | $n | $mean |"
  done
done
echo "$table" | tee "$OUT/proxy_attention.md"
