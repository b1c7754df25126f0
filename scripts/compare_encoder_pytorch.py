#!/usr/bin/python3
"""Issue 3's measurement: the 2-stage ResNet-18 patch encoder on 1-channel
50x50 patches at batch 1600, in PyTorch and in ipsnet, one run, same machine
and thread count. Prints patches/s of each and the ratios.

  /usr/bin/python3 scripts/compare_encoder_pytorch.py [--threads 2] [--build build]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
import make_golden as mg  # noqa: E402  (torchvision's ResNet structure, no torchvision needed)


def bench(fn, min_time=2.0):
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_time:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    ap.add_argument("--build", default="build")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = mg.ResNetEncoder(1, 2)
    x = torch.rand(1600, 1, 50, 50)
    r = torch.rand(1600, 128)
    net.eval()

    def sel():
        with torch.no_grad():
            net(x)

    t_sel = bench(sel)
    net.train()

    def trn():
        net.zero_grad()
        (net(x) * r).sum().backward()

    t_trn = bench(trn)
    torch_sel, torch_trn = 1600 / t_sel, 1600 / t_trn

    # PyTorch's CPU autocast to bfloat16 (what a user of a bf16-capable CPU
    # would turn on): convolutions and matmuls in bf16, the rest float32.
    def sel_bf16():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            net(x)

    def trn_bf16():
        net.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = net(x)
        (y.float() * r).sum().backward()

    net.eval()
    torch_sel_bf16 = 1600 / bench(sel_bf16)
    net.train()
    torch_trn_bf16 = 1600 / bench(trn_bf16)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    out = subprocess.run([os.path.join(a.build, "benchmarks", "bench_encoder"), "--benchmark_format=json"],
                         env=env, check=True, capture_output=True, text=True).stdout
    # Names look like "BM_SelectionForward/1600/<fold>/<bf16>/min_time:2.000".
    res = {"/".join(p for p in b["name"].split("/") if not p.startswith("min_time")): b
           for b in json.loads(out)["benchmarks"]}
    res["BM_SelectionForward"] = res["BM_SelectionForward/1600/0/0"]
    res["BM_TrainingPass"] = res["BM_TrainingPass/1600/0"]
    trn_bf16 = res.get("BM_TrainingPass/1600/1", {}).get("patches/s")
    folded = res["BM_SelectionForward/1600/1/0"]["patches/s"]
    bf16 = res.get("BM_SelectionForward/1600/0/1", {}).get("patches/s")
    ips_sel = res["BM_SelectionForward"]["patches/s"]
    ips_trn = res["BM_TrainingPass"]["patches/s"]
    print(f"threads {a.threads}, batch {1600}, torch {torch.__version__}")
    print(f"selection forward (eval, no grad): ipsnet {ips_sel:8.1f} patches/s ({res['BM_SelectionForward']['GFLOP/s']:.1f} GFLOP/s)"
          f"  torch {torch_sel:8.1f}  ratio {ips_sel / torch_sel:.2f}x (target >= 1.5x)")
    print(f"selection forward, BN folded:      ipsnet {folded:8.1f} patches/s"
          f"  torch {torch_sel:8.1f}  ratio {folded / torch_sel:.2f}x")
    if bf16:
        print(f"selection forward, bfloat16 convs: ipsnet {bf16:8.1f} patches/s"
              f"  torch {torch_sel:8.1f}  ratio {bf16 / torch_sel:.2f}x (optional, not exact)")
    else:
        print("selection forward, bfloat16 convs: skipped (no AVX512-BF16 on this CPU)")
    print(f"training pass (train, fwd+bwd):    ipsnet {ips_trn:8.1f} patches/s ({res['BM_TrainingPass']['GFLOP/s']:.1f} GFLOP/s)"
          f"  torch {torch_trn:8.1f}  ratio {ips_trn / torch_trn:.2f}x (target >= 1.0x)")
    if bf16:
        print(f"selection forward, bf16 vs torch autocast bf16: ipsnet {bf16:8.1f}  torch {torch_sel_bf16:8.1f}"
              f"  ratio {bf16 / torch_sel_bf16:.2f}x")
    if trn_bf16:
        print(f"training pass, precision bf16 vs torch autocast bf16: ipsnet {trn_bf16:8.1f}  torch {torch_trn_bf16:8.1f}"
              f"  ratio {trn_bf16 / torch_trn_bf16:.2f}x (ipsnet bf16 / fp32 {trn_bf16 / ips_trn:.2f}x,"
              f" torch bf16 / fp32 {torch_trn_bf16 / torch_trn:.2f}x)")
    else:
        print(f"training pass, bf16: ipsnet skipped (no AVX512-BF16); torch autocast bf16 {torch_trn_bf16:8.1f} patches/s")


if __name__ == "__main__":
    main()
