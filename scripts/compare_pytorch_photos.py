#!/usr/bin/env python3
"""IPS training speed on RGB photographs, PyTorch against ipsnet, one run side
by side: the traffic-signs config's shape (3 channels, ImageNet
normalisation, 100 x 100 patches, N = 192 at 1200 x 1600, M 10, I 32,
ResNet-18 with 4 stages, D 512, H 8, D_k = D_v 64, D_inner 2048, one token,
no positional encoding, one 4-class task, AdamW lr 3e-4 wd 0.1), with B
reduced (default 4, from the official 16) so that a step fits a 2-core CPU.

    /usr/bin/python3 scripts/compare_pytorch_photos.py --data DATASET
        [--threads 2] [--steps 2] [--B 4] [--M 10] [--I 32]
        [--ips-memory build/benchmarks/ips_memory]

DATASET is a photo dataset of `ipsnet import-traffic-signs` (or
import-images); both sides train on its first B training images.
A PyTorch step is the reference's eager pipeline: decode the B JPEGs (PIL,
as the reference's dataset), ToTensor, Normalize, cut the (B, N, 3, 100, 100)
patches, IPS selection for all B (no grad, eval mode, shuffled visiting
order), forward, backward, AdamW step. The ipsnet step is the same
(benchmarks/ips_memory --data, eager: decode the B images, cut patches on
the device; and lazy: decode only the rows the patches need). The first
step is a warm-up. Peak RSS = VmHWM over the measured steps. Besides the
wall time per step, the CPU time of the whole process per step (all
threads): on a shared, loaded machine the fairer measure of the work.
Needs Debian's python3-torch and python3-pil (use /usr/bin/python3).
"""
import argparse
import io
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_pytorch import build_model, peak_rss_bytes, reset_peak_rss  # noqa: E402


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_records(dataset, split, n):
    """The first n stored image files (bytes) and their class of the first task."""
    with open(os.path.join(dataset, split + ".ipspx"), "rb") as f:
        idx = f.read()
    with open(os.path.join(dataset, split + ".ipsp"), "rb") as f:
        data = f.read()
    assert idx[:8] == b"IPSNPIDX", "not a photo dataset index"
    count = struct.unpack_from("<q", idx, 16)[0]
    assert count >= n, f"{split} has {count} images, fewer than B = {n}"
    out = []
    for i in range(n):
        off, nbytes = struct.unpack_from("<QQ", idx, 64 + 64 * i)
        cls = struct.unpack_from("<i", idx, 64 + 64 * i + 32)[0]
        out.append((data[off:off + nbytes], cls))
    return out


def run_pytorch(args, records):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from PIL import Image

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, M, I, p = args.B, args.M, args.I, args.patch
    D, n_class = 512, 4
    net = build_model(torch, nn, D=D, H=8, D_k=64, D_v=64, D_inner=2048, n_token=1, dropout=0.1,
                      tasks=[("sign", n_class, "softmax")], in_chan=3, n_stages=4)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    target = torch.tensor([max(c, 0) % n_class for _, c in records])

    def load_batch():
        imgs = []
        for raw, _ in records:
            im = Image.open(io.BytesIO(raw)).convert("RGB")
            x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
            imgs.append((x - mean) / std)
        x = torch.stack(imgs)  # (B, 3, H, W)
        x = x.unfold(2, p, p).unfold(3, p, p)  # (B, 3, nr, nc, p, p)
        nr, nc = x.shape[2], x.shape[3]
        return x.permute(0, 2, 3, 1, 4, 5).reshape(B, nr * nc, 3, p, p).contiguous()

    N = None

    def step():
        nonlocal N
        patches = load_batch()
        N = patches.shape[1]
        enc, transf = net.encoder, net.transf
        net.eval()
        with torch.no_grad():
            perm = torch.randperm(N)
            patches_s = patches[:, perm]
            idx_s = perm.unsqueeze(0).expand(B, -1)
            mem_emb = enc(patches_s[:, :M].reshape(-1, 3, p, p)).view(B, M, D)
            mem_idx = idx_s[:, :M]
            for i in range(math.ceil((N - M) / I)):
                s, e = M + i * I, min(M + (i + 1) * I, N)
                it_emb = enc(patches_s[:, s:e].reshape(-1, 3, p, p)).view(B, e - s, D)
                all_emb = torch.cat([mem_emb, it_emb], 1)
                all_idx = torch.cat([mem_idx, idx_s[:, s:e]], 1)
                top = torch.topk(transf.get_scores(all_emb), M, dim=1).indices
                mem_emb = torch.gather(all_emb, 1, top.unsqueeze(-1).expand(-1, -1, D))
                mem_idx = torch.gather(all_idx, 1, top)
            sel = torch.gather(patches, 1, mem_idx.view(B, M, 1, 1, 1).expand(-1, -1, 3, p, p))
        net.train()
        opt.zero_grad()
        tok = transf(enc(sel.reshape(-1, 3, p, p)).view(B, M, D))
        loss = F.cross_entropy(net.output_layers["sign"](tok[:, 0]), target)
        loss.backward()
        opt.step()

    step()  # warm-up
    reset_peak_rss()
    times, cpu = [], []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    sec = sum(times) / len(times)
    return {"s_per_step": sec, "cpu_s_per_step": sum(cpu) / len(cpu), "img_per_s": B / sec,
            "peak_rss": peak_rss_bytes(), "N": N,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def run_ipsnet(args, label, mode):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    # The official traffic config, B reduced, no pretrained weights, no augmentation (PyTorch side: none either).
    sets = {"threads": args.threads, "device": "cpu", "B": args.B, "B_seq": args.B, "M": args.M, "I": args.I,
            "patch_size": args.patch, "patch_stride": args.patch, "pretrained": "false", "pretrained_path": "",
            "augment_jitter": 0,
            "augment_translate": 0}
    cmd = [args.ips_memory, "--config", os.path.join(ROOT, "configs/traffic_official.yaml"), "--data", args.data,
           "--mode", mode, "--steps", str(args.steps),
           f"--benchmark_out={out}", "--benchmark_out_format=json"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    with open(out) as f:
        b = json.load(f)["benchmarks"][0]
    os.unlink(out)
    return {"label": label, "s_per_step": b["s_per_step"], "cpu_s_per_step": b["cpu_s_per_step"],
            "img_per_s": b["img_per_s"],
            "peak_alloc": b["peak_alloc"], "peak_rss": b["peak_rss"], "N": b["N"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--data", required=True, help="photo dataset directory (import-traffic-signs)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--patch", type=int, default=100)
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--M", type=int, default=10)
    ap.add_argument("--I", type=int, default=32)
    ap.add_argument("--ips-memory", default=os.path.join(root, "build/benchmarks/ips_memory"))
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--skip-lazy", action="store_true")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    runs = [run_ipsnet(args, "ipsnet eager", "eager")]
    if not args.skip_lazy:
        runs.append(run_ipsnet(args, "ipsnet lazy", "lazy"))
    torch_res = run_pytorch(args, read_records(args.data, "train", args.B))

    load = os.getloadavg()
    print(f"\nconfig: RGB photographs, B {args.B}, N {torch_res['N']}, M {args.M}, I {args.I}, patch {args.patch}, "
          f"ResNet-18 (4 stages), D 512, 1 task; {args.threads} threads; {args.steps} measured steps; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'run':34s} {'s/step':>8s} {'CPU s/step':>11s} {'img/s':>8s} {'peak alloc MiB':>15s} "
          f"{'peak RSS MiB':>13s}")
    print(f"{'PyTorch ' + torch_res['torch'] + ' (eager)':34s} {torch_res['s_per_step']:8.3f} "
          f"{torch_res['cpu_s_per_step']:11.3f} {torch_res['img_per_s']:8.3f} {'-':>15s} "
          f"{torch_res['peak_rss'] / 2**20:13.1f}")
    for r in runs:
        assert int(r["N"]) == torch_res["N"], f"N differs: ipsnet {r['N']}, PyTorch {torch_res['N']}"
        print(f"{r['label']:34s} {r['s_per_step']:8.3f} {r['cpu_s_per_step']:11.3f} {r['img_per_s']:8.3f} "
              f"{r['peak_alloc'] / 2**20:15.1f} {r['peak_rss'] / 2**20:13.1f}")
    print("\nratios against PyTorch (speed: higher is better; memory: lower is better; CPU time per step is\n"
          "the fairer speed measure on a loaded machine)")
    for r in runs:
        print(f"  {r['label']:34s} speed x{r['img_per_s'] / torch_res['img_per_s']:.2f}   "
              f"CPU-time speed x{torch_res['cpu_s_per_step'] / r['cpu_s_per_step']:.2f}   "
              f"RSS / PyTorch RSS {r['peak_rss'] / torch_res['peak_rss']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"pytorch": torch_res, "ipsnet": runs, "threads": args.threads, "load": load}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
