#!/usr/bin/python3
"""The bad-input suite of the `ipsnet` command (issue 19).

Runs every row of tests/cli/bad_inputs.tsv against the built binary on tiny
generated data and checks, per row: the exit code, a fragment of the message,
that a failure is one line on stderr, and that no temporary or partial file
(NAME.tmp-*, NAME.old-*, NAME.lock, *.tmp) is left anywhere the command could
write. Rows may interrupt the command with SIGINT or SIGTERM once a file
appears, fill a small tmpfs (root only; a visible SKIP otherwise), and run a
follow-up command (e.g. the resume of an interrupted run).

Standard library only: python3 bad_inputs.py IPSNET_BINARY [TABLE]
"""
import fcntl
import fnmatch
import glob
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
TEMP_PATTERNS = ["*.tmp-*", "*.old-*", "*.lock", "*.tmp"]


def write_idx(dirname, prefix, per_class, seed):
    """Class c draws c+1 bars (the training tests' learnable digits)."""
    n = per_class * 10
    rng = seed
    img = bytearray(struct.pack(">IIII", 0x803, n, 28, 28))
    lab = bytearray(struct.pack(">II", 0x801, n))
    for i in range(n):
        c = i % 10
        lab.append(c)
        for r in range(28):
            for col in range(28):
                bar = r >= 2 and (r - 2) % 2 == 0 and (r - 2) // 2 <= c and 4 <= col < 24
                rng = (rng * 1103515245 + 12345) & 0x7FFFFFFF
                img.append(200 + rng % 56 if bar else 0)
    with open(os.path.join(dirname, prefix + "-images-idx3-ubyte"), "wb") as f:
        f.write(img)
    with open(os.path.join(dirname, prefix + "-labels-idx1-ubyte"), "wb") as f:
        f.write(lab)


class Suite:
    def __init__(self, binary, table):
        self.bin = os.path.abspath(binary)
        self.table = table
        self.root = tempfile.mkdtemp(prefix="ipsnet_bad_inputs_")
        self.env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2", "HOME": self.root}
        self.failures = []
        self.skipped = []
        self.ran = 0
        self.full = None

    # ---- fixtures ---------------------------------------------------------------
    def run(self, args, env_extra=None, check=True):
        env = dict(self.env)
        env.update(env_extra or {})
        p = subprocess.run([self.bin] + args, env=env, capture_output=True, text=True, timeout=300)
        if check and p.returncode != 0:
            raise SystemExit("fixture command failed: %s\n%s%s" % (" ".join(args), p.stdout, p.stderr))
        return p

    def setup(self):
        r = self.root
        self.vars = {"R": r, "DIGITS": r + "/digits", "D": r + "/data", "F": r + "/fixtures", "RUN": r + "/runs/run"}
        os.makedirs(self.vars["DIGITS"])
        os.makedirs(self.vars["F"])
        write_idx(self.vars["DIGITS"], "train", 4, 1)
        write_idx(self.vars["DIGITS"], "t10k", 2, 2)
        self.run(["generate-data", "--quiet", "--mnist", self.vars["DIGITS"], "--style", "ips", "--width", "168",
                  "--height", "168", "--n-train", "16", "--n-test", "8", "--n-noise", "3", "--threads", "1",
                  self.vars["D"]])
        self.tiny = ("n_epoch: 1\nn_epoch_warmup: 0\nB: 4\nB_seq: 4\nM: 4\nI: 8\npatch_size: 28\n"
                     "patch_stride: 28\nlr: 0.001\nwd: 0.0\ndropout: 0.0\nattn_dropout: 0.0\nseed: 5\n"
                     "enc_type: resnet18\nn_res_blocks: 2\nD: 32\nH: 2\nD_k: 8\nD_v: 8\nD_inner: 32\n"
                     "device: cpu\nprefetch: false\ndata_dir: " + self.vars["D"] + "\n")
        self.vars["CFG"] = self.vars["F"] + "/tiny.yaml"
        with open(self.vars["CFG"], "w") as f:
            f.write(self.tiny)
        self.run(["train", "--quiet", "--config", self.vars["CFG"], "--out", r + "/runs", "--set", "run_name=run"])
        self.vars["CKPT"] = self.vars["RUN"] + "/checkpoint_last.safetensors"
        self.run(["export-npy", "--flat", self.vars["D"], r + "/flat"])
        # A full disk: a 2 MiB tmpfs, when this runs as root and may mount.
        full = r + "/full"
        os.makedirs(full)
        # (A minimal root, e.g. a fresh debootstrap, may have no mount(8) at all.)
        if os.geteuid() == 0 and shutil.which("mount") and shutil.which("umount") and subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", full], capture_output=True).returncode == 0:
            self.full = full
            self.vars["FULL"] = full
        else:
            print("SKIP full-disk rows: not root, no mount(8), or cannot mount a tmpfs (run as root with util-linux "
                  "for them)")

    def teardown(self):
        if self.full:
            subprocess.run(["umount", self.full])
        shutil.rmtree(self.root, ignore_errors=True)

    # ---- the table --------------------------------------------------------------
    def expand(self, s, case_dir):
        v = dict(self.vars)
        v["O"] = case_dir
        return re.sub(r"\{(\w+)\}", lambda m: v[m.group(1)] if m.group(1) in v else m.group(0), s)

    def leftovers(self, dirs):
        found = []
        for d in dirs:
            for base, subdirs, files in os.walk(d):
                for name in subdirs + files:
                    if any(fnmatch.fnmatch(name, p) for p in TEMP_PATTERNS):
                        found.append(os.path.join(base, name))
        return found

    def fill(self, keep_kib):
        """Fills the tmpfs so that about keep_kib KiB stay free."""
        st = os.statvfs(self.full)
        free = st.f_bavail * st.f_frsize
        with open(self.full + "/filler", "wb") as f:
            f.write(b"\0" * max(0, free - keep_kib * 1024))

    def case(self, fields):
        name, exit_s, fragment, command = fields[:4]
        case_dir = os.path.join(self.root, "cases", name)
        fragment = self.expand(fragment, case_dir)
        extra = fields[4] if len(fields) > 4 else ""
        directives = dict(d.split("=", 1) if "=" in d else (d, "") for d in extra.split(";") if d.strip())
        needs_full = "{FULL}" in command or "fill" in directives
        if needs_full and not self.full:
            self.skipped.append(name)
            print("SKIP %s (needs the tmpfs full disk)" % name)
            return
        os.makedirs(case_dir)
        if self.full:
            for e in os.listdir(self.full):
                p = os.path.join(self.full, e)
                shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
        for key, val in directives.items():
            if key.startswith("file:"):
                path = self.expand(key[5:], case_dir)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write(self.expand(val, case_dir).replace("\\n", "\n").replace("{TINY}", self.tiny))
            elif key.startswith("copy:"):
                src, dst = self.expand(key[5:], case_dir), self.expand(val, case_dir)
                (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, dst)
            elif key.startswith("mkdir:"):
                os.makedirs(self.expand(key[6:], case_dir), exist_ok=True)
            elif key.startswith("flip:"):
                # flip:PATH=OFFSET_FROM_END flips one byte of the data section.
                path = self.expand(key[5:], case_dir)
                with open(path, "r+b") as f:
                    f.seek(-int(val), os.SEEK_END)
                    b = f.read(1)
                    f.seek(-int(val), os.SEEK_END)
                    f.write(bytes([b[0] ^ 0x40]))
            elif key.startswith("meta:") or key.startswith("rawmeta:"):
                # meta:PATH=KEY:VALUE rewrites a checkpoint's metadata and its CRC-32 (an edited
                # checkpoint); rawmeta: leaves the CRC-32 stale (a corrupt one).
                path = self.expand(key[key.index(":") + 1:], case_dir)
                k, newv = val.split(":", 1)
                with open(path, "rb") as f:
                    data = f.read()
                n = struct.unpack("<Q", data[:8])[0]
                header = json.loads(data[8:8 + n].decode())
                meta = header["__metadata__"]
                meta[k] = newv
                if key.startswith("meta:"):
                    blob = b"".join(mk.encode() + b"\0" + meta[mk].encode() + b"\0"
                                    for mk in sorted(meta, key=lambda x: x.encode()) if not mk.startswith("crc32:"))
                    meta["crc32:__metadata__"] = "%08x" % (zlib.crc32(blob) & 0xFFFFFFFF)
                hb = json.dumps(header, separators=(",", ":")).encode()
                hb += b" " * ((8 - (8 + len(hb)) % 8) % 8)
                with open(path, "wb") as f:
                    f.write(struct.pack("<Q", len(hb)) + hb + data[8 + n:])
            elif key.startswith("npyset:"):
                # npyset:PATH=I:V sets element I of an int64 .npy array.
                path = self.expand(key[7:], case_dir)
                i, v = (int(x) for x in val.split(":"))
                with open(path, "r+b") as f:
                    data = f.read()
                    hlen = data[8] | (data[9] << 8)
                    f.seek(10 + hlen + 8 * i)
                    f.write(struct.pack("<q", v))
        if "fill" in directives:
            self.fill(int(directives["fill"] or "0"))
        held = []
        for key in directives:
            if key.startswith("lock:"):
                # Another process holds the lock (a directory itself, or FILE.lock).
                path = self.expand(key[5:], case_dir)
                if not os.path.isdir(path):
                    path += ".lock"
                fd = os.open(path, os.O_RDONLY) if os.path.isdir(path) else os.open(path, os.O_RDWR | os.O_CREAT)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append((fd, None if os.path.isdir(path) else path))
        env_extra = {}
        args = shlex.split(self.expand(command, case_dir))
        sig = None
        if args and args[0].startswith("@SIG"):
            sig_name, wait_glob = args[0][1:].split(":", 1)
            sig = (getattr(signal, sig_name), wait_glob)
            args = args[1:]
        while args and re.match(r"^[A-Z_]+=", args[0]):
            k, v = args[0].split("=", 1)
            env_extra[k] = v
            args = args[1:]
        env = dict(self.env)
        env.update(env_extra)
        self.ran += 1
        t_row = time.time()
        twice = bool(args) and args[0] == "@TWICE"
        if twice:
            args = args[1:]
            procs = [subprocess.Popen([self.bin] + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for _ in range(2)]
            results = [pr.communicate(timeout=300) for pr in procs]
            rc = max(pr.returncode for pr in procs)
            out, err = results[0][0] + results[1][0], results[0][1] + results[1][1]
        elif sig is None:
            try:
                p = subprocess.run([self.bin] + args, env=env, capture_output=True, text=True, timeout=120)
            except subprocess.TimeoutExpired:
                self.failures.append("%s: did not finish in 120 s (a hang)" % name)
                return
            rc, out, err = p.returncode, p.stdout, p.stderr
        else:
            proc = subprocess.Popen([self.bin] + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            deadline = time.time() + 90
            while time.time() < deadline and proc.poll() is None and not glob.glob(sig[1]):
                time.sleep(0.02)
            if proc.poll() is not None:
                out, err = proc.communicate()
                self.failures.append("%s: finished (exit %s) before '%s' appeared, so no signal was sent:\n%s" %
                                     (name, proc.returncode, sig[1], err))
                return
            proc.send_signal(sig[0])
            try:
                out, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                self.failures.append("%s: still running 120 s after the signal (a hang)" % name)
                return
            rc = proc.returncode
        for fd, path in held:
            os.close(fd)
            if path:
                os.remove(path)
        problems = []
        if str(rc) != exit_s:
            problems.append("exit %s, expected %s" % (rc, exit_s))
        if fragment and fragment not in out + err:
            problems.append("message lacks '%s'" % fragment)
        if rc == 2 and len(err.strip().splitlines()) != 1:
            problems.append("the error is %d lines, expected one" % len(err.strip().splitlines()))
        if self.full and os.path.exists(self.full + "/filler"):
            os.remove(self.full + "/filler")
        dirs = [case_dir, self.vars["F"], self.vars["D"], self.vars["RUN"]] + ([self.full] if self.full else [])
        left = self.leftovers(dirs)
        if left:
            problems.append("left behind: " + ", ".join(left))
        for key, val in directives.items():
            if key == "absent":
                for path in val.split(","):
                    if os.path.exists(self.expand(path, case_dir)):
                        problems.append("'%s' exists; a failed command must not leave it" % path)
            elif key == "exists":
                for path in val.split(","):
                    if not os.path.exists(self.expand(path, case_dir)):
                        problems.append("'%s' does not exist" % path)
            elif key.startswith("count:"):
                n = len(glob.glob(self.expand(key[6:], case_dir)))
                if n != int(val):
                    problems.append("%d paths match '%s', expected %s" % (n, key[6:], val))
            elif key == "then":
                p2 = subprocess.run([self.bin] + shlex.split(self.expand(val, case_dir)), env=self.env,
                                    capture_output=True, text=True, timeout=300)
                if p2.returncode != 0:
                    problems.append("follow-up '%s' exited %d: %s" % (val, p2.returncode, p2.stderr.strip()))
                left = self.leftovers(dirs)
                if left:
                    problems.append("left behind after the follow-up: " + ", ".join(left))
        if problems:
            self.failures.append("%s: %s\n    command: %s\n    stderr: %s" %
                                 (name, "; ".join(problems), " ".join(args), err.strip()[-2000:]))
        else:
            print("ok   %s (%.1f s)" % (name, time.time() - t_row))

    def main(self):
        t0 = time.time()
        self.setup()
        print("fixtures ready in %.1f s" % (time.time() - t0))
        with open(self.table) as f:
            for line in f:
                line = line.rstrip("\n")
                if not line.strip() or line.startswith("#"):
                    continue
                fields = line.split("\t")
                if len(fields) < 4:
                    self.failures.append("bad table row (needs 4+ tab-separated fields): " + line)
                    continue
                self.case(fields)
        print("%d rows run, %d skipped, %d failed, %.1f s" % (self.ran, len(self.skipped), len(self.failures),
                                                             time.time() - t0))
        for f in self.failures:
            print("FAIL " + f)
        return 1 if self.failures else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: bad_inputs.py IPSNET_BINARY [TABLE]")
    suite = Suite(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "bad_inputs.tsv"))
    try:
        rc = suite.main()
    finally:
        suite.teardown()
    sys.exit(rc)
