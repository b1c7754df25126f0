#!/usr/bin/python3
"""End-to-end check of scripts/import_torch_weights.py (ctest: TorchImport.conversion_script).

Needs python3-torch; without it the test exits 77, which ctest reports as
SKIPPED (the C++ tests TorchImport.* still check the committed fixtures).

  torch_import_test.py IPSNET_BINARY

1. builds, in a temporary directory, the fixture of tests/fixtures/make_torch_import.py
   from scratch: official-IPS-structured random weights saved by PyTorch (names
   encoder.0.*, encoder.4.*, ..., no num_batches_tracked), 4 images as the reference's
   test.npy alone, PyTorch's selected patches and probabilities (shuffle off);
2. converts the .pt with the script, without and with --config (and a wrong config:
   refused, naming the tensor and both shapes);
3. `ipsnet import-npy` of the directory that holds only test.npy, then
   `ipsnet eval --config` (and eval of the checkpoint that carries its config):
   same selected patches, probabilities within 1e-5;
4. `resnet` mode on torchvision-structured resnet18 (with fc) and resnet50 state dicts:
   fc dropped, every other tensor unchanged; the encoder names of `ips` mode equal
   torchvision's; ipsnet accepts the resnet18 file as pretrained_path.
"""
import csv
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import torch
    import torch.nn as nn
except ImportError:
    print("SKIPPED: python3-torch is not installed (apt-get install python3-torch); "
          "the C++ tests TorchImport.* still checked the committed fixtures")
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
import make_golden as mg  # noqa: E402
import make_torch_import as gen  # noqa: E402
import safetensors_np  # noqa: E402

SCRIPT = os.path.join(ROOT, "scripts", "import_torch_weights.py")
PY = sys.executable
failures = []


def check(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg)
    if not cond:
        failures.append(msg)


def run(cmd, expect_ok=True):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if expect_ok and r.returncode != 0:
        print(r.stdout)
        raise SystemExit("FAIL: %s exited %d" % (" ".join(cmd), r.returncode))
    return r


def compare(csv_path, expected, what):
    rows = list(csv.DictReader(open(csv_path)))
    check(len(rows) == expected["n_images"], "%s: %d rows" % (what, len(rows)))
    worst = 0.0
    for r in rows:
        i = int(r["image"])
        got = sorted(int(x) for x in r["selected_patches"].split())
        check(got == sorted(expected["selected"][i]), "%s: image %d selects %s (PyTorch %s)"
              % (what, i, got, sorted(expected["selected"][i])))
        for task, p in expected["probs"].items():
            for k, v in enumerate(p[i]):
                worst = max(worst, abs(float(r["%s_p%d" % (task, k)]) - v))
    check(worst < 1e-5, "%s: max |p - p_torch| = %.3g (< 1e-5)" % (what, worst))
    return worst


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample


def torchvision_resnet(kind, in_ch):
    """A torchvision-structured ResNet (names and children as torchvision) with its fc."""
    if kind == "resnet18":
        net = mg.ResNetEncoder(in_ch, 4)
        net.fc = nn.Linear(512, 1000)
        return net
    net = nn.Module()
    net.conv1 = nn.Conv2d(in_ch, 64, 7, 2, 3, bias=False)
    net.bn1 = nn.BatchNorm2d(64)
    inplanes = 64
    for s, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        layers = []
        for b in range(blocks):
            stride = 2 if (b == 0 and s > 0) else 1
            ds = None
            if b == 0:
                ds = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
            layers.append(Bottleneck(inplanes, planes, stride, ds))
            inplanes = planes * 4
        setattr(net, "layer%d" % (s + 1), nn.Sequential(*layers))
    net.fc = nn.Linear(2048, 1000)
    return net


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    ipsnet = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="ipsnet_torch_import_")
    try:
        # 1. the fixture from scratch
        expected = gen.build(tmp, PY)
        check(expected["min_score_gap"] > 1e-6, "selection margin: smallest gap between the M-th and "
              "(M+1)-th score %.3g" % expected["min_score_gap"])
        sd = torch.load(os.path.join(tmp, "model.pt"))
        check("encoder.0.weight" in sd and "encoder.4.0.conv1.weight" in sd and "encoder.1.running_var" in sd,
              "the .pt uses the official code's nn.Sequential names")
        check(not any(k.endswith("num_batches_tracked") for k in sd), "the .pt has no num_batches_tracked")

        # 2. the script
        plain = os.path.join(tmp, "model.safetensors")  # written by build(), no --config
        t, meta = safetensors_np.load(plain)
        check("config" not in meta and "encoder.conv1.weight" in t and "encoder.layer1.0.conv1.weight" in t
              and "encoder.bn1.running_mean" in t, "ips mode renames encoder.N.* to torchvision names, no config")
        committed, _ = safetensors_np.load(os.path.join(gen.OUT, "model.safetensors"))
        same = set(committed) == set(t) and all(committed[k].shape == t[k].shape for k in t)
        check(same, "regenerated checkpoint has the committed fixture's names and shapes")
        if same:
            print("     (regenerated vs committed weights: max |diff| %.3g; nonzero only if this PyTorch's RNG differs)"
                  % max(float(abs(committed[k].astype("float64") - t[k]).max()) for k in t))
        with_cfg = os.path.join(tmp, "with_config.safetensors")
        run([PY, SCRIPT, "ips", os.path.join(tmp, "model.pt"), with_cfg, "--config", os.path.join(tmp, "config.yaml")])
        _, meta = safetensors_np.load(with_cfg)
        check("config" in meta and "n_res_blocks: 2" in meta["config"], "ips --config stores the config")
        bad_cfg = os.path.join(tmp, "bad.yaml")
        with open(os.path.join(tmp, "config.yaml")) as f:
            text = f.read()
        with open(bad_cfg, "w") as f:
            f.write(text.replace("D_inner: 512", "D_inner: 256"))
        r = run([PY, SCRIPT, "ips", os.path.join(tmp, "model.pt"), os.path.join(tmp, "bad.safetensors"),
                 "--config", bad_cfg], expect_ok=False)
        check(r.returncode == 2 and "transf.mlp.w_1.weight: checkpoint (512, 128) vs config (256, 128)" in r.stdout
              and not os.path.exists(os.path.join(tmp, "bad.safetensors")),
              "a config that does not match is refused, naming the tensor and both shapes")

        # 3. ipsnet: import-npy of test.npy alone, eval --config, eval of the checkpoint with its config
        check(sorted(os.listdir(os.path.join(tmp, "ref_npy"))) == ["parameters.json", "test.npy"],
              "reference directory holds only test.npy and parameters.json")
        data = os.path.join(tmp, "data")
        run([ipsnet, "import-npy", os.path.join(tmp, "ref_npy"), data])
        p1 = os.path.join(tmp, "p1.csv")
        run([ipsnet, "eval", "--quiet", "--checkpoint", plain, "--config", os.path.join(tmp, "config.yaml"),
             "--data", data, "--predictions", p1])
        w1 = compare(p1, expected, "eval --config")
        p2 = os.path.join(tmp, "p2.csv")
        run([ipsnet, "eval", "--quiet", "--checkpoint", with_cfg, "--data", data, "--predictions", p2])
        compare(p2, expected, "eval of the checkpoint with its config")

        # 4. resnet mode
        enc_names = None
        for kind, ch in (("resnet18", 3), ("resnet18", 1), ("resnet50", 3)):
            torch.manual_seed(5)
            net = torchvision_resnet(kind, ch)
            src = {k: v for k, v in net.state_dict().items()}
            pth = os.path.join(tmp, "%s_%d.pth" % (kind, ch))
            torch.save(src, pth)
            out = os.path.join(tmp, "%s_%d.safetensors" % (kind, ch))
            r = run([PY, SCRIPT, "resnet", pth, out])
            got, meta = safetensors_np.load(out)
            want = {k: v for k, v in src.items() if not k.startswith("fc.")}
            check(set(got) == set(want) and all((got[k] == want[k].numpy()).all() for k in want)
                  and meta.get("arch") == kind, "resnet mode %s (%d channels): fc dropped, %d tensors unchanged"
                  % (kind, ch, len(want)))
            if kind == "resnet18" and ch == 1:
                # The same ResNet as the official code's Sequential encoder, through ips mode.
                seq = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                                    net.layer4, nn.AdaptiveAvgPool2d(1))
                pt = os.path.join(tmp, "seq.pt")
                torch.save({"encoder." + k: v for k, v in seq.state_dict().items()}, pt)
                run([PY, SCRIPT, "ips", pt, os.path.join(tmp, "seq.safetensors")])
                s, _ = safetensors_np.load(os.path.join(tmp, "seq.safetensors"))
                check({k[len("encoder."):] for k in s} == set(got)
                      and all((s["encoder." + k] == got[k]).all() for k in got),
                      "ips mode's encoder names equal torchvision's (4 stages)")
            if kind == "resnet18" and ch == 3:
                enc_names = out
        p3 = os.path.join(tmp, "p3.csv")
        r = run([ipsnet, "eval", "--quiet", "--checkpoint", plain, "--config", os.path.join(tmp, "config.yaml"),
                 "--data", data, "--predictions", p3, "--set", "pretrained_path=" + enc_names], expect_ok=False)
        check(r.returncode == 0, "ipsnet accepts the converted resnet18 as pretrained_path" +
              ("" if r.returncode == 0 else ": " + r.stdout.strip()))

        print("\nsummary: PyTorch (float64) vs ipsnet eval --config on %d images, N %d, M %d, I %d: identical "
              "selections, max |p - p_torch| %.3g; PyTorch float32 vs float64 %.3g"
              % (expected["n_images"], expected["N"], expected["M"], expected["I"], w1,
                 expected["probs_torch_float32_max_abs_diff"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
