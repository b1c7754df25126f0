#!/usr/bin/python3
"""Issue 14's extraction measurement: `ipsnet extract-features` (ResNet-50 to
2048 features, centre crop 224, batch 32) over the tiles of synthetic slides,
against PyTorch running torchvision's ResNet-50 (fc removed, eval, no_grad)
over as many 224x224 tiles at the same batch and thread count, one run each on
the same machine. ipsnet's figure is the whole command (OpenSlide reads, crop,
normalisation, the encoder, writing the bags); PyTorch's is the encoder alone
on tensors already in memory, so the ratio understates ipsnet's lead.

  /usr/bin/python3 scripts/compare_extract_pytorch.py [--threads 2] [--build build] [--work /tmp/wsi-bench]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

import torch
import torchvision


def run(cmd, env):
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stdout}")
    return p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    ap.add_argument("--build", default="build")
    ap.add_argument("--work", default="/tmp/ipsnet-wsi-bench")
    ap.add_argument("--size", type=int, default=3072, help="level-0 side of the synthetic slides")
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    exe = os.path.join(a.build, "apps", "ipsnet")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    slides, tiles, bags = (os.path.join(a.work, d) for d in ("slides", "tiles", "bags"))
    run([exe, "generate-slides", "--quiet", "--size", str(a.size), "--n-normal", "1", "--n-tumor", "1",
         "--n-test-normal", "0", "--n-test-tumor", "0", slides], env)
    out = run([exe, "wsi-tiles", "--quiet", "--tile-size", "256", slides, tiles], env)
    n_tiles = int(re.search(r"(\d+) tiles ->", out).group(1))

    t0 = time.perf_counter()
    out = run([exe, "extract-features", "--quiet", "--depth", "50", "--batch", str(a.batch), "--device", "cpu",
               tiles, bags], env)
    ipsnet_s = time.perf_counter() - t0
    ipsnet_rate = float(re.search(r"([\d.]+) tiles/s;", out).group(1))

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = torchvision.models.resnet50()
    net.fc = torch.nn.Identity()
    net.eval()
    x = torch.rand(a.batch, 3, 224, 224)
    with torch.no_grad():
        net(x[:2])  # warm-up
        t0 = time.perf_counter()
        done = 0
        while done < n_tiles:
            m = min(a.batch, n_tiles - done)
            y = net(x[:m])
            done += m
        torch_s = time.perf_counter() - t0
    assert y.shape[1] == 2048
    torch_rate = n_tiles / torch_s
    print(f"tiles: {n_tiles} of 256 px (crop 224), ResNet-50 -> 2048, batch {a.batch}, {a.threads} threads")
    print(f"ipsnet extract-features (whole command): {ipsnet_rate:.2f} tiles/s ({ipsnet_s:.1f} s wall)")
    print(f"PyTorch {torch.__version__} ResNet-50 forward only:   {torch_rate:.2f} tiles/s ({torch_s:.1f} s)")
    print(f"ratio ipsnet / PyTorch: {ipsnet_rate / torch_rate:.2f}x")


if __name__ == "__main__":
    main()
