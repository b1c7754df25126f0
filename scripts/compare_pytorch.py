#!/usr/bin/env python3
"""Runs one IPS training configuration in PyTorch (the reference architecture
of SPEC section 2, eager loading as the reference's official Megapixel MNIST
config) and in ipsnet (benchmarks/ips_memory, subprocess), in one run, and
prints the ratios of images per second and of peak memory.

    /usr/bin/python3 scripts/compare_pytorch.py [--threads 2] [--steps 3] [--side 1500]
        [--ips-memory build-bench/benchmarks/ips_memory] [--ipsnet build-bench/apps/ipsnet]

Both sides: same images (the first B training images of a generated
dataset, exported to the reference .npy layout for PyTorch), same B, N, M, I,
patch size, ResNet-18 (2 stages), D 128, four tasks, AdamW; the same thread
count (torch.set_num_threads / ipsnet `threads`, OMP_NUM_THREADS for both).
A step = densify the B sparse images and cut the (B, N, 1, h, w) patches,
IPS selection for all B, forward, backward, AdamW step; the first step is a
warm-up. Peak resident memory = VmHWM over the measured steps (reset with
/proc/self/clear_refs after the warm-up, the same in both processes).
ipsnet runs with its exact shortcuts off, then on (zero-patch dedup + BN
folding), and also in lazy mode.
--precision bf16 (issue 17): ipsnet with `precision: bf16`, PyTorch with its
CPU autocast to bfloat16 (`torch.autocast('cpu', dtype=torch.bfloat16)`
around the selection's and the training pass's forward, as a user of a
bf16-capable CPU would run it); --precision both runs float32 and bf16 side
by side in one run.
Needs Debian's python3-torch (use /usr/bin/python3).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def peak_rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def build_model(torch, nn, D, H, D_k, D_v, D_inner, n_token, dropout, tasks, in_chan=1, n_stages=2):
    """The reference: torchvision ResNet-18 (in_chan channels, n_stages
    stages; the feature width 64 << (n_stages - 1) must equal D), the IPS
    notebook's cross-attention transformer, one linear head per task."""

    def conv3x3(i, o, s=1):
        return nn.Conv2d(i, o, 3, stride=s, padding=1, bias=False)

    class BasicBlock(nn.Module):
        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = conv3x3(inplanes, planes, stride)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = conv3x3(planes, planes)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            return self.relu(out + identity)

    class Encoder(nn.Module):
        def __init__(self, n_stages=2):
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(in_chan, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.n_stages = n_stages
            for s in range(n_stages):
                setattr(self, f"layer{s + 1}", self._make_layer(64 << s, 2, 1 if s == 0 else 2))
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

        def _make_layer(self, planes, blocks, stride):
            ds = None
            if stride != 1 or self.inplanes != planes:
                ds = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(planes))
            layers = [BasicBlock(self.inplanes, planes, stride, ds)]
            self.inplanes = planes
            layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for s in range(self.n_stages):
                x = getattr(self, f"layer{s + 1}")(x)
            return torch.flatten(self.avgpool(x), 1)

    class CrossAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Parameter(torch.empty((1, n_token, D)))
            v = math.sqrt(1 / D_k)
            nn.init.uniform_(self.q, a=-v, b=v)
            self.q_w = nn.Linear(D, H * D_k, bias=False)
            self.k_w = nn.Linear(D, H * D_k, bias=False)
            self.v_w = nn.Linear(D, H * D_v, bias=False)
            self.fc = nn.Linear(H * D_v, D, bias=False)
            self.attn_drop = nn.Dropout(dropout)
            self.dropout = nn.Dropout(dropout)
            self.layer_norm = nn.LayerNorm(D, eps=1e-6)

        def get_attn(self, x):
            B, L = x.shape[:2]
            q = self.q_w(self.q).view(1, n_token, H, D_k).transpose(1, 2)
            k = self.k_w(x).view(B, L, H, D_k).transpose(1, 2)
            return self.attn_drop(torch.softmax(torch.matmul(q / D_k ** 0.5, k.transpose(2, 3)), dim=-1))

        def forward(self, x):
            B, L = x.shape[:2]
            v = self.v_w(x).view(B, L, H, D_v).transpose(1, 2)
            o = torch.matmul(self.get_attn(x), v).transpose(1, 2).contiguous().view(B, n_token, -1)
            o = self.dropout(self.fc(o)) + self.q
            return self.layer_norm(o)

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.w_1 = nn.Linear(D, D_inner)
            self.w_2 = nn.Linear(D_inner, D)
            self.layer_norm = nn.LayerNorm(D, eps=1e-6)
            self.dropout = nn.Dropout(dropout)

        def forward(self, x):
            return self.layer_norm(self.dropout(self.w_2(torch.relu(self.w_1(x)))) + x)

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.crs_attn = CrossAttention()
            self.mlp = MLP()

        def get_scores(self, x):
            return self.crs_attn.get_attn(x).mean(dim=1).transpose(1, 2).mean(-1)

        def forward(self, x):
            return self.mlp(self.crs_attn(x))

    class IPSNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Encoder(n_stages)
            self.transf = Transformer()
            self.output_layers = nn.ModuleDict({t: nn.Sequential(nn.Linear(D, c)) for t, c, _ in tasks})

    return IPSNet()


def pos_enc(torch, n, D):
    p = torch.arange(n, dtype=torch.float64)[:, None]
    w = torch.exp(-math.log(10000.0) * torch.arange(0, D, 2, dtype=torch.float64) / D)
    pe = torch.zeros(n, D, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(p * w)
    pe[:, 1::2] = torch.cos(p * w)
    return pe.float()


def run_pytorch(args, npy_path, bf16=False):
    import contextlib
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    items = np.load(npy_path, allow_pickle=True)[: args.B]
    side, p = args.side, args.patch
    N = (side // p) ** 2
    M, I, B, D = args.M, args.I, args.B, 128
    tasks = [("majority", 10, "softmax"), ("max", 10, "softmax"), ("top", 10, "softmax"), ("multi", 10, "sigmoid")]
    net = build_model(torch, nn, D=D, H=8, D_k=16, D_v=16, D_inner=512, n_token=4, dropout=0.1, tasks=tasks)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    pos = pos_enc(torch, N, D)
    targets = {
        "majority": torch.tensor([int(it["majority"]) for it in items]),
        "max": torch.tensor([int(it["max"]) for it in items]),
        "top": torch.tensor([int(it["top"]) for it in items]),
        "multi": torch.tensor(np.stack([np.asarray(it["multi"], dtype=np.float32) for it in items])),
    }

    def load_batch():
        # Densify the sparse images and cut (B, N, 1, p, p) patches (the reference's eager mode).
        dense = np.zeros((B, side * side), dtype=np.float32)
        for b, it in enumerate(items):
            idx, val = it["input"]
            dense[b, np.asarray(idx)] = np.asarray(val, dtype=np.float32)
        x = torch.from_numpy(dense).view(B, 1, side, side)
        x = x.unfold(2, p, p).unfold(3, p, p)  # (B, 1, nr, nc, p, p)
        return x.permute(0, 2, 3, 1, 4, 5).reshape(B, N, 1, p, p).contiguous()

    def amp():
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step():
        patches = load_batch()
        enc, transf = net.encoder, net.transf
        # ---- IPS selection: no grad, eval mode ----
        net.eval()
        with torch.no_grad(), amp():
            perm = torch.randperm(N)
            patches_s = patches[:, perm]
            pos_s = pos[perm]
            idx_s = perm.unsqueeze(0).expand(B, -1)
            mem_emb = enc(patches_s[:, :M].reshape(-1, 1, p, p)).view(B, M, D)
            mem_idx = idx_s[:, :M]
            mem_pos = pos_s[:M].unsqueeze(0).expand(B, -1, -1)
            n_iter = math.ceil((N - M) / I)
            for i in range(n_iter):
                s, e = M + i * I, min(M + (i + 1) * I, N)
                it_emb = enc(patches_s[:, s:e].reshape(-1, 1, p, p)).view(B, e - s, D)
                all_emb = torch.cat([mem_emb, it_emb], 1)
                all_idx = torch.cat([mem_idx, idx_s[:, s:e]], 1)
                all_pos = torch.cat([mem_pos, pos_s[s:e].unsqueeze(0).expand(B, -1, -1)], 1)
                scores = transf.get_scores(all_emb + all_pos)
                top = torch.topk(scores, M, dim=1).indices
                mem_emb = torch.gather(all_emb, 1, top.unsqueeze(-1).expand(-1, -1, D))
                mem_idx = torch.gather(all_idx, 1, top)
                mem_pos = torch.gather(all_pos, 1, top.unsqueeze(-1).expand(-1, -1, D))
            sel = torch.gather(patches, 1, mem_idx.view(B, M, 1, 1, 1).expand(-1, -1, 1, p, p))
        # ---- training pass ----
        net.train()
        opt.zero_grad()
        with amp():
            emb = enc(sel.reshape(-1, 1, p, p)).view(B, M, D) + pos[mem_idx]
            tok = transf(emb)
        loss = 0
        for k, (t, _, act) in enumerate(tasks):
            logits = net.output_layers[t](tok[:, k].float())
            if act == "softmax":
                loss = loss + F.cross_entropy(logits, targets[t])
            else:
                loss = loss + F.binary_cross_entropy_with_logits(logits, targets[t])
        loss = loss / len(tasks)
        loss.backward()
        opt.step()

    step()  # warm-up
    reset_peak_rss()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    sec = sum(times) / len(times)
    return {"s_per_step": sec, "img_per_s": B / sec, "peak_rss": peak_rss_bytes(), "N": N,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "label": f"PyTorch {torch.__version__} " + ("(autocast bf16)" if bf16 else "(eager)")}


def run_ipsnet(args, label, extra):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [args.ips_memory, "--set", f"threads={args.threads}", "--set", f"B={args.B}", "--set", f"B_seq={args.B}",
           "--set", f"M={args.M}", "--set", f"I={args.I}", "--set", f"patch_size={args.patch}",
           "--set", f"patch_stride={args.patch}", "--side", str(args.side), "--steps", str(args.steps),
           f"--benchmark_out={out}", "--benchmark_out_format=json"] + extra
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), IPSNET_BENCH_DATA=args.data_root)
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    with open(out) as f:
        b = json.load(f)["benchmarks"][0]
    os.unlink(out)
    return {"label": label, "s_per_step": b["s_per_step"], "img_per_s": b["img_per_s"],
            "peak_alloc": b["peak_alloc"], "peak_rss": b["peak_rss"], "model_err": b["model_err"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--side", type=int, default=1500)
    ap.add_argument("--patch", type=int, default=50)
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--M", type=int, default=100)
    ap.add_argument("--I", type=int, default=100)
    ap.add_argument("--ips-memory", default=os.path.join(root, "build-bench/benchmarks/ips_memory"))
    ap.add_argument("--ipsnet", default=os.path.join(root, "build-bench/apps/ipsnet"))
    ap.add_argument("--data-root", default=os.environ.get("IPSNET_BENCH_DATA", "/tmp/ipsnet_bench_data"))
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--skip-lazy", action="store_true")
    ap.add_argument("--precision", choices=["fp32", "bf16", "both"], default="fp32",
                    help="fp32; bf16: ipsnet precision=bf16 against PyTorch's CPU autocast; both: side by side")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    # ipsnet first: it generates the dataset (<data-root>/<side>-n<max(B,16)>) on first use.
    runs = []
    for prec in precisions:
        tag = " bf16" if prec == "bf16" else ""
        extra = ["--set", "precision=bf16"] if prec == "bf16" else []
        runs.append(run_ipsnet(args, f"ipsnet{tag} eager, shortcuts off", ["--mode", "eager", "--shortcuts", "off"] + extra))
        runs[-1]["precision"] = prec
        runs.append(run_ipsnet(args, f"ipsnet{tag} eager, shortcuts on", ["--mode", "eager", "--shortcuts", "on"] + extra))
        runs[-1]["precision"] = prec
        if not args.skip_lazy:
            runs.append(run_ipsnet(args, f"ipsnet{tag} lazy, shortcuts on", ["--mode", "lazy", "--shortcuts", "on"] + extra))
            runs[-1]["precision"] = prec
    data_dir = os.path.join(args.data_root, f"{args.side}-n{max(args.B, 16)}")
    npy_dir = data_dir + "-npy"
    if not os.path.exists(os.path.join(npy_dir, "train.npy")):
        subprocess.run([args.ipsnet, "export-npy", "--force", data_dir, npy_dir], check=True,
                       stdout=subprocess.DEVNULL)
    torch_res = {prec: run_pytorch(args, os.path.join(npy_dir, "train.npy"), bf16=prec == "bf16")
                 for prec in precisions}

    load = os.getloadavg()
    any_torch = torch_res[precisions[0]]
    print(f"\nconfig: B {args.B}, N {any_torch['N']}, M {args.M}, I {args.I}, patch {args.patch}, "
          f"ResNet-18 (2 stages), D 128, 4 tasks; {args.threads} threads; {args.steps} measured steps; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'run':34s} {'s/step':>8s} {'img/s':>8s} {'peak alloc MiB':>15s} {'peak RSS MiB':>13s}")
    for prec in precisions:
        t = torch_res[prec]
        print(f"{t['label']:34s} {t['s_per_step']:8.3f} {t['img_per_s']:8.2f} {'-':>15s} {t['peak_rss'] / 2**20:13.1f}")
    for r in runs:
        print(f"{r['label']:34s} {r['s_per_step']:8.3f} {r['img_per_s']:8.2f} {r['peak_alloc'] / 2**20:15.1f} "
              f"{r['peak_rss'] / 2**20:13.1f}")
    print("\nratios against PyTorch in the same precision (images/s: higher is better; memory: lower is better)")
    for r in runs:
        t = torch_res[r["precision"]]
        print(f"  {r['label']:34s} speed x{r['img_per_s'] / t['img_per_s']:.2f}   "
              f"peak alloc / PyTorch RSS {r['peak_alloc'] / t['peak_rss']:.3f}   "
              f"RSS / PyTorch RSS {r['peak_rss'] / t['peak_rss']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"pytorch": torch_res, "ipsnet": runs, "threads": args.threads, "load": load}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
