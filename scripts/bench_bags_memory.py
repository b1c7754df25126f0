#!/usr/bin/python3
"""Issue 14's training measurement on feature bags: peak memory and seconds
per step of `ipsnet train` with the reference's CAMELYON16 model
(configs/camelyon_official.yaml: F 2048, D 512, M = I = 5000, lazy, B_seq 1)
on bags of N = 25,000 to 250,000 tiles, one run per N. The bags hold random
features (speed and memory do not depend on the values); they are written in
ipsnet's bag format (data/bag_file.h) by this script.

Reports per N: the peak bytes allocated to tensors (ipsnet's allocator, the
reference's definition), the process's maximum resident set (which also counts
the pages of the memory-mapped bags the selection touched: file-backed and
reclaimable), and the seconds of the training step (B = 2 slides).

  /usr/bin/python3 scripts/bench_bags_memory.py [--build build] [--threads 2] [--sizes 25000,100000,250000]
"""
import argparse
import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np


def write_bag(path, name, split, label, feats):
    n, F = feats.shape
    nm, sp = name.encode(), split.encode()
    foff = (128 + len(nm) + len(sp) + 63) // 64 * 64
    coords = np.zeros((n, 2), "<i8")
    coords[:, 0] = np.arange(n) * 256
    fb, cb = feats.astype("<f4", copy=False).tobytes(), coords.tobytes()
    coff = foff + len(fb)
    head = bytearray(foff)
    head[0:8] = b"IPSNBAG1"
    struct.pack_into("<I", head, 8, 1)
    struct.pack_into("<qqqi", head, 16, n, F, label, 0)
    struct.pack_into("<dqqQQQII", head, 48, 256.0, 256, 256, foff, coff, coff + len(cb), len(nm), len(sp))
    struct.pack_into("<II", head, 104, zlib.crc32(fb), zlib.crc32(cb))
    head[128:128 + len(nm)] = nm
    head[128 + len(nm):128 + len(nm) + len(sp)] = sp
    struct.pack_into("<I", head, 124, zlib.crc32(bytes(head)))
    with open(path, "wb") as f:
        f.write(bytes(head))
        f.write(fb)
        f.write(cb)


CONFIG = """dataset: camelyon
data_dir: {data}
out_dir: {out}
run_name: n{n}
is_image: False
eager: False
B: 2
B_seq: 1
n_epoch: 1
n_epoch_warmup: 0
lr: 0.0003
wd: 0.1
use_pos: False
M: 5000
I: 5000
D: 512
H: 8
D_k: 64
D_v: 64
D_inner: 2048
attn_dropout: 0.1
dropout: 0.1
n_token: 1
device: cpu
max_test: 1
tasks:
  task0: {{id: 0, name: metastases, act_fn: sigmoid, metric: auc, n_class: 1}}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    ap.add_argument("--sizes", default="25000,100000,250000")
    ap.add_argument("--work", default="/tmp/ipsnet-bags-bench")
    a = ap.parse_args()
    exe = os.path.join(a.build, "apps", "ipsnet")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    rng = np.random.default_rng(0)
    print(f"{'N':>8} {'peak allocated MiB':>19} {'max RSS MiB':>12} {'s/step':>8}")
    for n in (int(s) for s in a.sizes.split(",")):
        shutil.rmtree(a.work, ignore_errors=True)
        data = os.path.join(a.work, "bags")
        os.makedirs(os.path.join(data, "bags"))
        rows = ["name,split,label,n,F,file"]
        for i, split in enumerate(("train", "train", "test")):
            feats = rng.standard_normal((n, 2048), dtype=np.float32)
            write_bag(os.path.join(data, "bags", f"s{i}.bag"), f"s{i}", split, i % 2, feats)
            rows.append(f"s{i},{split},{i % 2},{n},2048,bags/s{i}.bag")
            del feats
        with open(os.path.join(data, "bags.csv"), "w") as f:
            f.write("\n".join(rows) + "\n")
        cfg = os.path.join(a.work, "c.yaml")
        with open(cfg, "w") as f:
            f.write(CONFIG.format(data=data, out=os.path.join(a.work, "runs"), n=n))
        p = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M", exe, "train", "--config", cfg], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            sys.exit(p.stdout)
        rss = int([l for l in p.stdout.splitlines() if l.startswith("MAXRSS")][-1].split()[1]) / 1024
        with open(os.path.join(a.work, "runs", f"n{n}", "metrics.csv")) as f:
            train = [l.split(",") for l in f if ",train," in l][-1]
        # epoch,split,task,loss,metric_name,metric,lr,seconds,images_per_s,peak_allocated_mib
        print(f"{n:>8} {float(train[9]):>19.1f} {rss:>12.1f} {float(train[7]):>8.2f}")
        sys.stdout.flush()
    shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
