#!/usr/bin/env python3
"""Data-parallel training end to end (docs/distributed.md), against one process.

usage: train_dist_test.py IPSNET_BINARY

On a tiny generated Megapixel MNIST set, with SGD and a frozen encoder (its
BatchNorm statistics then do not depend on how the batch is split, so K ranks
must compute what one process computes up to the order of float sums), and
once with a trained encoder and sync_batchnorm:
  1. `mpirun -np 2` (one thread each) against one process: per-epoch losses and
     metrics, and the final parameters, within 1e-5 relative;
  2. the same over the file rendezvous (no MPI);
  3. resume across rank counts: 1 rank stopped mid-epoch, resumed on 2, and the
     other way round, both ending where the uninterrupted run ends;
  4. a rank killed with SIGKILL stops the job in one line naming the rank;
  5. bad launcher settings: B not divisible by K, different configs per rank,
     a command other than train under mpirun.
Without mpirun (or an ipsnet built without MPI) the MPI parts are skipped and
say so; exit 77 if nothing could run. Python standard library only.
"""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

IPSNET = os.path.abspath(sys.argv[1])
TMP = tempfile.mkdtemp(prefix="ipsnet-dist-train-")
FAILS = []
MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl="self,vader", OMPI_MCA_btl_vader_single_copy_mechanism="none",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        FAILS.append(what)


def run(cmd, env=None, timeout=600):
    p = subprocess.run(cmd, env=env or MPI_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout


def write_idx(path_prefix, per_class, seed):
    """MNIST IDX files of learnable synthetic digits: class c draws c+1 bars."""
    n = per_class * 10
    rnd = seed
    imgs, labs = bytearray(), bytearray()
    for i in range(n):
        c = i % 10
        labs.append(c)
        for r in range(28):
            for col in range(28):
                bar = r >= 2 and (r - 2) % 2 == 0 and (r - 2) // 2 <= c and 4 <= col < 24
                rnd = (rnd * 6364136223846793005 + 1442695040888963407) % (1 << 64)
                imgs.append(200 + (rnd >> 59) if bar else 0)
    with open(path_prefix + "-images-idx3-ubyte", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 28, 28) + bytes(imgs))
    with open(path_prefix + "-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">II", 0x801, n) + bytes(labs))


def safetensors(path):
    """name -> list of floats (float32 tensors only; optimizer state included)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, info in header.items():
            if name == "__metadata__" or info["dtype"] != "F32":
                continue
            a, b = info["data_offsets"]
            f.seek(base + a)
            out[name] = struct.unpack("<%df" % ((b - a) // 4), f.read(b - a))
        return out


def close(a, b, rel=1e-5, abs_=1e-6):
    return abs(a - b) <= rel * max(abs(a), abs(b)) + abs_


def compare_runs(ref_dir, other_dir, what):
    ref = [json.loads(l) for l in open(os.path.join(ref_dir, "metrics.jsonl"))]
    oth = [json.loads(l) for l in open(os.path.join(other_dir, "metrics.jsonl"))]
    check(len(ref) == len(oth) and len(ref) > 0, f"{what}: {len(oth)} epochs of metrics, one process {len(ref)}")
    worst = ""
    for r, o in zip(ref, oth):
        for task, vals in r["tasks"].items():
            for k, v in vals.items():
                if not close(v, o["tasks"][task][k]):
                    worst = worst or f"epoch {r['epoch']} {task} {k}: {o['tasks'][task][k]} against {v}"
    check(not worst, f"{what}: losses and metrics per epoch within 1e-5 relative" + (f" ({worst})" if worst else ""))
    a = safetensors(os.path.join(ref_dir, "checkpoint_last.safetensors"))
    b = safetensors(os.path.join(other_dir, "checkpoint_last.safetensors"))
    bad, n, maxrel = [], 0, 0.0
    for name, va in a.items():
        if name.startswith("metrics."):
            continue
        vb = b.get(name)
        if vb is None or len(vb) != len(va):
            bad.append(name)
            continue
        for x, y in zip(va, vb):
            n += 1
            if not close(x, y, 1e-5, 1e-7):
                bad.append(f"{name}: {y} against {x}")
                break
            if abs(x) > 1e-3:
                maxrel = max(maxrel, abs(x - y) / abs(x))
    check(not bad and n > 0, f"{what}: {n} final parameter and optimizer values within 1e-5 relative "
                             f"(largest relative difference {maxrel:.2e})" + (f"; first: {bad[0]}" if bad else ""))


def main():
    digits = os.path.join(TMP, "digits")
    os.makedirs(digits)
    write_idx(os.path.join(digits, "train"), 8, 1)
    write_idx(os.path.join(digits, "t10k"), 4, 2)
    data = os.path.join(TMP, "mm")
    rc, out = run([IPSNET, "generate-data", "--style", "ips", "--mnist", digits, "--n-train", "28", "--n-test", "12",
                   "--width", "168", "--height", "168", "--n-noise", "3", "--threads", "1", "--quiet", data])
    if rc != 0:
        print(out)
        sys.exit(1)
    cfg = os.path.join(TMP, "dist.yaml")
    with open(cfg, "w") as f:
        # 28 images in batches of 8: 4 steps per epoch, the last with 4 images.
        f.write("n_epoch: 3\nn_epoch_warmup: 0\nB: 8\nB_seq: 8\nM: 4\nI: 8\npatch_size: 28\npatch_stride: 28\n"
                "optimizer: sgd\nmomentum: 0.9\nlr: 0.05\nwd: 0.0001\ndropout: 0.0\nattn_dropout: 0.0\nseed: 5\n"
                "freeze: all\nlog_every: 1\ndevice: cpu\nprefetch: false\n")
    runs = os.path.join(TMP, "runs")
    base = [IPSNET, "train", "--config", cfg, "--data", data, "--out", runs, "--threads", "1", "--quiet"]

    rc, out = run(base + ["--set", "run_name=one"])
    check(rc == 0, "one process trains" + ("" if rc == 0 else ": " + out[-2000:]))
    one = os.path.join(runs, "one")
    if rc != 0:
        return

    # The file rendezvous (always built): two processes started by hand.
    rdv = os.path.join(TMP, "rdv")
    procs = []
    for r in range(2):
        env = dict(MPI_ENV, IPSNET_RENDEZVOUS="file:" + rdv, IPSNET_RANK=str(r), IPSNET_WORLD_SIZE="2")
        procs.append(subprocess.Popen(base + ["--set", "run_name=file2"], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    check(all(p.returncode == 0 for p in procs), "2 ranks over the file rendezvous train" +
          ("" if all(p.returncode == 0 for p in procs) else ": " + "".join(outs)[-2000:]))
    if all(p.returncode == 0 for p in procs):
        compare_runs(one, os.path.join(runs, "file2"), "file rendezvous, 2 ranks")

    have_mpi = shutil.which("mpirun") is not None
    if have_mpi:
        rc, out = run(["mpirun", "-np", "2", IPSNET, "info"])
        if "only `ipsnet train` runs on several ranks" not in out:
            have_mpi = False
            print("SKIPPED (MPI part): this ipsnet was built without MPI (IPSNET_MPI): " + out.strip()[-300:])
        else:
            check(rc != 0, "a command other than train under mpirun is refused in one line")
    else:
        print("SKIPPED (MPI part): no mpirun on PATH (apt-get install openmpi-bin)")
    if have_mpi:
        rc, out = run(["mpirun", "-np", "2"] + base + ["--set", "run_name=mpi2"])
        check(rc == 0, "mpirun -np 2 trains" + ("" if rc == 0 else ": " + out[-2000:]))
        if rc == 0:
            compare_runs(one, os.path.join(runs, "mpi2"), "mpirun -np 2")
            lines = out.strip().splitlines()
            check(lines.count(os.path.join(runs, "mpi2")) == 1, "rank 0 alone prints the run directory")
        # A trained encoder with synchronised BatchNorm statistics: the same as one process too.
        bn = ["--set", "freeze=none", "--set", "sync_batchnorm=true", "--set", "n_epoch=2"]
        rc1, out1 = run(base + bn + ["--set", "run_name=one_bn"])
        rc2, out2 = run(["mpirun", "-np", "2"] + base + bn + ["--set", "run_name=mpi2_bn"])
        check(rc1 == 0 and rc2 == 0, "a trained encoder with sync_batchnorm on 1 and 2 ranks" +
              ("" if rc1 == 0 and rc2 == 0 else ": " + (out1 + out2)[-2000:]))
        if rc1 == 0 and rc2 == 0:
            compare_runs(os.path.join(runs, "one_bn"), os.path.join(runs, "mpi2_bn"),
                         "mpirun -np 2, trained encoder, sync_batchnorm")
        # 1 rank stopped mid-epoch (step 6 of 12: epoch 2, batch 2), resumed on 2 ranks.
        rc, out = run(base + ["--set", "run_name=r12", "--stop-after", "6"])
        check(rc == 0 and "stopped after step 6" in out, "--stop-after 6 stops with a checkpoint" +
              ("" if rc == 0 else ": " + out[-1000:]))
        rc, out = run(["mpirun", "-np", "2", IPSNET, "train", "--resume", os.path.join(runs, "r12"), "--quiet"])
        check(rc == 0, "a 1-rank checkpoint resumes on 2 ranks" + ("" if rc == 0 else ": " + out[-2000:]))
        if rc == 0:
            compare_runs(one, os.path.join(runs, "r12"), "1 rank, then resumed on 2")
        rc, out = run(["mpirun", "-np", "2"] + base + ["--set", "run_name=r21", "--stop-after", "5"])
        check(rc == 0, "2 ranks stop after step 5" + ("" if rc == 0 else ": " + out[-1000:]))
        rc, out = run([IPSNET, "train", "--resume", os.path.join(runs, "r21"), "--quiet", "--threads", "1"])
        check(rc == 0, "a 2-rank checkpoint resumes on 1 rank" + ("" if rc == 0 else ": " + out[-2000:]))
        if rc == 0:
            compare_runs(one, os.path.join(runs, "r21"), "2 ranks, then resumed on 1")
        # Bad launcher settings.
        rc, out = run(["mpirun", "-np", "2"] + base + ["--set", "run_name=odd", "--set", "B=7", "--set", "B_seq=7"])
        check(rc != 0 and "'B': 7 is not divisible by the 2 ranks" in out, "B not divisible by K: one line")
        rc, out = run(["mpirun", "-np", "1"] + base + ["--set", "run_name=mm", "--set", "lr=0.01", ":", "-np", "1"] +
                      base + ["--set", "run_name=mm", "--set", "lr=0.02"])
        check(rc != 0 and "the config of rank(s) 1 differs from rank 0's" in out, "different configs: one line" +
              ("" if "differs" in out else ": " + out[-1000:]))
        # A rank killed in the middle of training stops the job, naming it.
        long_cfg = base + ["--set", "run_name=killed", "--set", "n_epoch=400"]
        p = subprocess.Popen(["mpirun", "-np", "2"] + long_cfg, env=MPI_ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
        log = os.path.join(runs, "killed", "train.log")
        t0 = time.time()
        while time.time() - t0 < 120 and not (os.path.exists(log) and "step 3 " in open(log).read()):
            time.sleep(0.2)
        victim = None
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
                cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            if b"run_name=killed" in cmd and b"OMPI_COMM_WORLD_RANK=1" in env and cmd.startswith(IPSNET.encode()):
                victim = int(pid)
        check(victim is not None, "found rank 1's process")
        if victim:
            os.kill(victim, signal.SIGKILL)
        try:
            out = p.communicate(timeout=90)[0]
            check(p.returncode != 0 and "rank 1" in out, "a killed rank stops the others, named (exit %s)" %
                  p.returncode + ("" if "rank 1" in out else ": " + out[-1500:]))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            check(False, "a killed rank stops the others within 90 s (it hung)")


try:
    main()
finally:
    shutil.rmtree(TMP, ignore_errors=True)
print("%d failed" % len(FAILS))
sys.exit(1 if FAILS else 0)
