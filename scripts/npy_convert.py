#!/usr/bin/python3
"""Convert between ipsnet's flat .npy directory and the reference tools'
pickled train.npy / test.npy layout (attention-sampling make_mnist.py and the
IPS / dissertation generators). Needs only python3 and NumPy.

  npy_convert.py pack   FLAT_DIR REF_DIR   # flat -> train.npy, test.npy, parameters.json
  npy_convert.py unpack REF_DIR FLAT_DIR   # train.npy, test.npy -> flat

Reference layout (one object per image, np.load(..., allow_pickle=True)):
  ats:            ((idx_low, val_low), (idx_high, val_high), y)
                  idx int64 flat indices of the nonzero pixels, val float32,
                  y one-hot float64 (10,)
  ips/pineneedle: {'input': (idx, val), 'majority': int, 'max': int,
                   'top': int, 'multi': float32 (10,) multi-hot}

Flat layout (plain arrays, written/read by `ipsnet export-npy/import-npy`),
for SPLIT in train, test:
  SPLIT_high_offsets.npy int64 (n+1,)   SPLIT_high_idx.npy int64   SPLIT_high_val.npy float32
  SPLIT_low_*  (ats only)               SPLIT_labels.npy int64 (n, 4): majority, max, top, n_noise
  SPLIT_multi.npy uint8 (n, 10)         SPLIT_digits.npy int64 (n, 5, 4) row, col, size, label (optional)
  flat.json {style, height, width, lowres_height, lowres_width, n_train, n_test}
  parameters.json (copied)
"""
import json
import os
import shutil
import sys

try:
    import numpy as np
except ImportError:  # pragma: no cover
    sys.stderr.write("npy_convert.py: error: NumPy is not installed (apt-get install python3-numpy)\n")
    sys.exit(2)


def fail(msg):
    sys.stderr.write("npy_convert.py: error: %s\n" % msg)
    sys.exit(2)


def pack(flat, ref):
    with open(os.path.join(flat, "flat.json")) as f:
        info = json.load(f)
    style = info["style"]
    for split in ("train", "test"):
        off = np.load(os.path.join(flat, split + "_high_offsets.npy"))
        idx = np.load(os.path.join(flat, split + "_high_idx.npy"))
        val = np.load(os.path.join(flat, split + "_high_val.npy"))
        labels = np.load(os.path.join(flat, split + "_labels.npy"))
        multi = np.load(os.path.join(flat, split + "_multi.npy"))
        if style == "ats":
            loff = np.load(os.path.join(flat, split + "_low_offsets.npy"))
            lidx = np.load(os.path.join(flat, split + "_low_idx.npy"))
            lval = np.load(os.path.join(flat, split + "_low_val.npy"))
        n = len(off) - 1
        out = np.empty(n, dtype=object)
        for i in range(n):
            high = (idx[off[i]:off[i + 1]].astype(np.int64), val[off[i]:off[i + 1]].astype(np.float32))
            if style == "ats":
                low = (lidx[loff[i]:loff[i + 1]].astype(np.int64), lval[loff[i]:loff[i + 1]].astype(np.float32))
                y = np.zeros(10, dtype=np.float64)
                if labels[i, 0] >= 0:
                    y[labels[i, 0]] = 1.0
                out[i] = (low, high, y)
            else:
                out[i] = {"input": high, "majority": int(labels[i, 0]), "max": int(labels[i, 1]),
                          "top": int(labels[i, 2]), "multi": multi[i].astype(np.float32)}
        np.save(os.path.join(ref, split + ".npy"), out, allow_pickle=True)
    src = os.path.join(flat, "parameters.json")
    if os.path.exists(src):
        shutil.copyfile(src, os.path.join(ref, "parameters.json"))


def unpack(ref, flat):
    ppath = os.path.join(ref, "parameters.json")
    if not os.path.exists(ppath):
        fail("'%s' is missing: the canvas size comes from it" % ppath)
    with open(ppath) as f:
        params = json.load(f)
    for k in ("width", "height"):
        if k not in params:
            fail("'%s' lacks \"%s\"" % (ppath, k))
    height, width = int(params["height"]), int(params["width"])
    style = None
    counts = {"train": 0, "test": 0}
    splits = [s for s in ("train", "test") if os.path.exists(os.path.join(ref, s + ".npy"))]
    if not splits:
        fail("'%s' holds neither train.npy nor test.npy" % ref)
    for split in splits:  # one split alone is fine (e.g. test.npy for evaluation)
        path = os.path.join(ref, split + ".npy")
        data = np.load(path, allow_pickle=True)
        n = len(data)
        counts[split] = n
        views = {"high": ([0], [], []), "low": ([0], [], [])}
        labels = np.full((n, 4), -1, dtype=np.int64)
        multi = np.zeros((n, 10), dtype=np.uint8)
        for i, item in enumerate(data):
            if isinstance(item, dict):
                s = params.get("style", "ips")
                if s == "ats":
                    s = "ips"
                parts = {"high": item["input"]}
                labels[i, :3] = [int(item["majority"]), int(item["max"]), int(item["top"])]
                multi[i] = (np.asarray(item["multi"]).reshape(-1)[:10] != 0)
            elif isinstance(item, (tuple, list)) and len(item) == 3:
                s = "ats"
                parts = {"low": item[0], "high": item[1]}
                labels[i, 0] = int(np.argmax(item[2]))
            else:
                fail("%s[%d] is neither an ats tuple nor an ips dict" % (path, i))
            if style is None:
                style = s
            elif style != s:
                fail("%s mixes image layouts" % path)
            for name, (ix, vl) in parts.items():
                o, ia, va = views[name]
                ia.append(np.asarray(ix, dtype=np.int64).reshape(-1))
                va.append(np.asarray(vl, dtype=np.float32).reshape(-1))
                o.append(o[-1] + len(ia[-1]))
        for name, (o, ia, va) in views.items():
            if name == "low" and style != "ats":
                continue
            np.save(os.path.join(flat, "%s_%s_offsets.npy" % (split, name)), np.asarray(o, dtype=np.int64))
            np.save(os.path.join(flat, "%s_%s_idx.npy" % (split, name)),
                    np.concatenate(ia) if ia else np.zeros(0, np.int64))
            np.save(os.path.join(flat, "%s_%s_val.npy" % (split, name)),
                    np.concatenate(va) if va else np.zeros(0, np.float32))
        np.save(os.path.join(flat, split + "_labels.npy"), labels)
        np.save(os.path.join(flat, split + "_multi.npy"), multi)
    style = style or params.get("style", "ips")
    scale = float(params.get("scale", 0.12))
    info = {"style": style, "height": height, "width": width,
            "lowres_height": int(height * scale) if style == "ats" else 0,
            "lowres_width": int(width * scale) if style == "ats" else 0,
            "n_train": counts["train"], "n_test": counts["test"]}
    with open(os.path.join(flat, "flat.json"), "w") as f:
        json.dump(info, f)
    shutil.copyfile(ppath, os.path.join(flat, "parameters.json"))


def main(argv):
    if len(argv) != 4 or argv[1] not in ("pack", "unpack"):
        sys.stderr.write(__doc__)
        return 2
    try:
        (pack if argv[1] == "pack" else unpack)(argv[2], argv[3])
    except (OSError, KeyError, ValueError) as e:
        fail(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
