#!/usr/bin/env bash
# Data-parallel training on this machine (docs/distributed.md): images/s of the
# official Megapixel MNIST config (configs/mnist_official.yaml: B 16, M 100,
# I 100, N 900, 1500 x 1500) for 1 process x T threads against K processes x
# T/K threads, over the same global batches, and the modelled scaling of the
# gradient sum to 8 GPUs on one node and to 4 nodes.
#
# usage: benchmarks/dist_scaling.sh [BUILD_DIR] [STEPS]
#   BUILD_DIR  a build with MPI (default build)
#   STEPS      optimizer steps per run (default 4; the first is not timed)
# env: RANKS (2), THREADS (total, default nproc), WORK (default /tmp/ipsnet-dist-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
STEPS=${2:-4}
RANKS=${RANKS:-2}
THREADS=${THREADS:-$(nproc)}
WORK=${WORK:-/tmp/ipsnet-dist-bench}
IPSNET=$BUILD/apps/ipsnet
command -v mpirun >/dev/null || { echo "dist_scaling: no mpirun (apt-get install openmpi-bin)"; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader \
  OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1
mkdir -p "$WORK"
DATA=$WORK/mm1500
if [[ ! -d $DATA ]]; then
  bash scripts/get_mnist.sh >/dev/null
  "$IPSNET" generate-data --style ips --n-train $((16 * (STEPS + 1))) --n-test 16 --quiet "$DATA"
fi
rm -rf "$WORK/runs"
common=(train --config configs/mnist_official.yaml --data "$DATA" --out "$WORK/runs" --quiet
        --stop-after "$STEPS" --set log_every=1)
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; ranks $RANKS, threads $THREADS in all"
OMP_NUM_THREADS=$THREADS "$IPSNET" "${common[@]}" --threads "$THREADS" --set run_name=one >/dev/null
per=$((THREADS / RANKS)); ((per >= 1)) || per=1
mpirun -np "$RANKS" -x OMP_NUM_THREADS=$per "$IPSNET" "${common[@]}" --threads "$per" --set run_name=dp >/dev/null
/usr/bin/env python3 - "$WORK/runs" "$RANKS" "$THREADS" "$per" <<'EOF'
import json, re, struct, sys, os, statistics
runs, K, T, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def steps(run):
    out = []
    for l in open(os.path.join(runs, run, "train.log")):
        m = re.match(r"step (\d+) \| loss [^|]+\| lr [^|]+\| ([\d.]+) ms \(select ([\d.]+), train ([\d.]+)\) \| ([\d.]+) img/s", l)
        if m:
            out.append((int(m.group(1)), float(m.group(2)), float(m.group(5))))
    return out[1:]  # the first step warms up
one, dp = steps("one"), steps("dp")
def med(xs): return statistics.median(xs)
ms1, msk = med([s[1] for s in one]), med([s[1] for s in dp])
print(f"1 process x {T} threads: {med([s[2] for s in one]):.2f} img/s ({ms1 / 1000:.2f} s/step, median of {len(one)} steps)")
print(f"{K} processes x {per} threads: {med([s[2] for s in dp]):.2f} img/s ({msk / 1000:.2f} s/step, median of {len(dp)} steps)")
print(f"ratio ({K} processes / 1 process): {ms1 / msk:.2f}x")
# Gradient bytes per step: the trained float32 parameters of the checkpoint.
with open(os.path.join(runs, "one", "checkpoint_last.safetensors"), "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
pbytes = sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in h.items()
             if k != "__metadata__" and not k.startswith(("optimizer.", "metrics.")) and v["dtype"] == "F32"
             and not k.endswith(("running_mean", "running_var")))
print(f"gradient bytes per step: {pbytes} ({pbytes / 2**20:.1f} MiB, {pbytes // 4} float32 parameters)")
# Ring all-reduce: 2 (K-1)/K x bytes at the bus bandwidth, plus 2 (K-1) latencies.
for name, k, bw, lat in [("8 GPUs, one node (NVLink, 300 GB/s bus bandwidth, 10 us)", 8, 300e9, 10e-6),
                         ("4 nodes x 8 GPUs (InfiniBand NDR 400 Gb/s per GPU, ~40 GB/s bus bandwidth, 20 us)", 32, 40e9, 20e-6)]:
    t = 2 * (k - 1) / k * pbytes / bw + 2 * (k - 1) * lat
    print(f"{name}: ring all-reduce {t * 1e3:.3f} ms per step")
EOF
