#!/usr/bin/env python3
"""Agreement of bfloat16 selection (`selection_bf16: true`) with float32
selection on a trained checkpoint: runs `ipsnet eval` twice on the same
images and compares the selected patches and the predictions.

    python3 scripts/bf16_agreement.py --checkpoint RUN/checkpoint_best.safetensors
        [--data DIR] [--ipsnet build/apps/ipsnet] [--max-images 0] [--key selection_bf16|precision]
        [--set bf16_margin=0 ...]

--key precision compares `precision: bf16` (the selection's and the pass's
convolutions and matrix products in bfloat16, issue 17) with `precision:
fp32`, both with selection_bf16 off; the default compares selection_bf16.

Prints per run the eval time and the metrics, then: the mean overlap of the
selected sets (|A and B| / M per image), the fraction of images whose
selected set is identical, and per task the fraction of identical
predictions. Needs only the Python standard library.
"""
import argparse
import csv
import os
import subprocess
import sys
import tempfile


def run_eval(a, bf16, out_csv):
    if a.key == "precision":
        sets = ["--set", "selection_bf16=false", "--set", "precision=" + ("bf16" if bf16 else "fp32")]
    else:
        # precision fp32 in both: a checkpoint trained with precision: bf16 keeps it in its config
        sets = ["--set", "precision=fp32", "--set", "selection_bf16=" + ("true" if bf16 else "false")]
    cmd = [a.ipsnet, "eval", "--checkpoint", a.checkpoint, "--predictions", out_csv, "--quiet",
           "--max-images", str(a.max_images)] + sets
    for extra in a.set:
        cmd += ["--set", extra]
    if a.data:
        cmd += ["--data", a.data]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("bf16_agreement: `%s` failed:\n%s" % (" ".join(cmd), r.stderr.strip()))
    return r.stdout


def load(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {r["image"]: r for r in rows}


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default="")
    ap.add_argument("--ipsnet", default=os.path.join(root, "build", "apps", "ipsnet"))
    ap.add_argument("--max-images", type=int, default=0)
    ap.add_argument("--key", choices=["selection_bf16", "precision"], default="selection_bf16",
                    help="what is switched to bfloat16: selection_bf16 (default) or precision")
    ap.add_argument("--set", action="append", default=[],
                    help="another config override for both runs, e.g. bf16_margin=0 (repeatable)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name, bf16 in (("float32", False), ("bfloat16", True)):
            path = os.path.join(tmp, name + ".csv")
            out = run_eval(a, bf16, path)
            print("== selection in %s\n%s" % (name, out.strip()))
            runs[name] = load(path)
    f, b = runs["float32"], runs["bfloat16"]
    images = sorted(f, key=int)
    sel_col = [c for c in next(iter(f.values())) if c.startswith("selected")]
    if not sel_col:
        sys.exit("bf16_agreement: the predictions CSV has no selected-patches column")
    sel_col = sel_col[0]
    overlap, same = 0.0, 0
    for i in images:
        A, B = set(f[i][sel_col].split()), set(b[i][sel_col].split())
        overlap += len(A & B) / max(len(A), 1)
        same += A == B
    n = len(images)
    print("\n%d images: mean overlap of the selected sets %.4f, identical sets %.4f" % (n, overlap / n, same / n))
    for col in [c for c in f[images[0]] if c.endswith("_pred")]:
        agree = sum(f[i][col] == b[i][col] for i in images) / n
        print("  %-16s identical predictions %.4f" % (col, agree))


if __name__ == "__main__":
    main()
