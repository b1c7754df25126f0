#!/usr/bin/python3
"""Issue 14 item 7's measurement: peak memory of a training step of IPS on
slide pixels (the `slides` data source, data/slide_source.h) for slides of
N = 1,000 to 100,000 kept tiles. The encoder is trained end to end: every
tile is read through OpenSlide when the selection asks for it.

One synthetic slide (`ipsnet generate-slides --size 2048`, tiles of 32 px at
level 1 by `ipsnet wsi-tiles`) has a few hundred kept tiles; to reach N its
tile list is repeated (the tile file rewritten with the coordinates tiled N
times, CRC-32 recomputed): every one of the N instances is still a real
read_region of the slide, only the pixels repeat. One training step (B = 1,
one training slide, no evaluation) per N.

Reports per N: the peak bytes allocated to tensors (ipsnet's allocator), the
process's maximum resident set (/usr/bin/time), and the seconds of the step.

  /usr/bin/python3 scripts/bench_slides_memory.py [--build build] [--threads 2] [--sizes 1000,10000,100000]
"""
import argparse
import os
import shutil
import struct
import subprocess
import sys
import zlib

HEADER, RECORD = 80, 24  # data/wsi_tiles.cpp: kTilesHeader, kTileRecord

CONFIG = """dataset: camelyon
data_dir: {data}
out_dir: {out}
run_name: n{n}
is_image: True
eager: False
n_chan_in: 3
patch_size: 32
normalize: imagenet
enc_type: resnet18
n_res_blocks: 2
B: 1
B_seq: 1
n_epoch: 1
n_epoch_warmup: 0
eval_every: 0
lr: 0.0003
wd: 0.1
use_pos: False
M: 16
I: 64
D: 64
H: 4
D_k: 16
D_v: 16
D_inner: 128
attn_dropout: 0.1
dropout: 0.1
n_token: 1
device: cpu
tasks:
  task0: {{id: 0, name: metastases, act_fn: sigmoid, metric: auc, n_class: 1}}
"""


def repeat_tiles(path, n):
    """Rewrites the tile file at path with its tiles repeated to n."""
    b = open(path, "rb").read()
    assert zlib.crc32(b[:-4]) == struct.unpack("<I", b[-4:])[0], "unexpected tile file checksum"
    k = struct.unpack_from("<q", b, 64)[0]
    lp, ln = struct.unpack_from("<II", b, 72)
    start = HEADER + lp + ln
    assert len(b) == start + k * RECORD + 4, "unexpected tile file layout"
    recs = b[start:start + k * RECORD]
    out = bytearray(b[:start])
    struct.pack_into("<q", out, 64, n)
    out += (recs * (n // k + 1))[:n * RECORD]
    out += struct.pack("<I", zlib.crc32(bytes(out)))
    with open(path, "wb") as f:
        f.write(out)
    return k


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--work", default="/tmp/ipsnet-slides-bench")
    a = ap.parse_args()
    exe = os.path.join(a.build, "apps", "ipsnet")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    run = lambda *args: subprocess.run([exe, *args], env=env, check=True, stdout=subprocess.DEVNULL)
    run("generate-slides", "--quiet", "--size", "2048", "--n-normal", "0", "--n-tumor", "1", "--n-test-normal", "1",
        "--n-test-tumor", "0", "--seed", "1", os.path.join(a.work, "cam"))
    tiles = os.path.join(a.work, "tiles")
    run("wsi-tiles", "--quiet", "--tile-size", "32", "--level", "1", os.path.join(a.work, "cam"), tiles)
    csv = open(os.path.join(tiles, "slides.csv")).read().splitlines()
    orig = open(os.path.join(tiles, "tiles", "tumor_001.tiles"), "rb").read()
    print(f"{'N':>8} {'peak allocated MiB':>19} {'max RSS MiB':>12} {'s/step':>8}")
    for n in (int(s) for s in a.sizes.split(",")):
        path = os.path.join(tiles, "tiles", "tumor_001.tiles")
        with open(path, "wb") as f:
            f.write(orig)
        k = repeat_tiles(path, n)
        rows = [csv[0]]
        for r in csv[1:]:
            f = r.split(",")
            if f[0] == "tumor_001":
                f[3] = str(n)
            rows.append(",".join(f))
        with open(os.path.join(tiles, "slides.csv"), "w") as f:
            f.write("\n".join(rows) + "\n")
        cfg = os.path.join(a.work, "c.yaml")
        with open(cfg, "w") as f:
            f.write(CONFIG.format(data=tiles, out=os.path.join(a.work, "runs"), n=n))
        p = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M", exe, "train", "--config", cfg], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            sys.exit(p.stdout)
        rss = int([l for l in p.stdout.splitlines() if l.startswith("MAXRSS")][-1].split()[1]) / 1024
        with open(os.path.join(a.work, "runs", f"n{n}", "metrics.csv")) as f:
            train = [l.split(",") for l in f if ",train," in l][-1]
        # epoch,split,task,loss,metric_name,metric,lr,seconds,images_per_s,peak_allocated_mib
        print(f"{n:>8} {float(train[9]):>19.1f} {rss:>12.1f} {float(train[7]):>8.2f}   ({k} distinct tiles)")
        sys.stdout.flush()
    shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
