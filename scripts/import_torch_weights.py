#!/usr/bin/python3
"""Convert PyTorch weights into ipsnet checkpoints (safetensors). Needs python3-torch;
ipsnet itself never does.

  import_torch_weights.py resnet IN.pth OUT.safetensors
      A torchvision ImageNet ResNet state dict (resnet18/34/50/101/152, e.g.
      resnet18-f37072fd.pth, resnet50-11ad3fa6.pth) -> an encoder checkpoint for
      the config key `pretrained_path`: torchvision names, `fc.*` dropped.

  import_torch_weights.py ips IN.pt OUT.safetensors [--config CONFIG.yaml]
      A state dict saved by the official IPS code (torch.save(net.state_dict(), ...)
      or a dict holding it under 'state_dict' / 'model_state_dict' / 'model' / 'net')
      -> an ipsnet model checkpoint. Its image encoder is an nn.Sequential of the
      torchvision ResNet's children, so `encoder.0.*` (conv1), `encoder.1.*` (bn1),
      `encoder.4.*` .. `encoder.7.*` (layer1 .. layer4) become `encoder.conv1.*`,
      `encoder.bn1.*`, `encoder.layer1.*` ..; `transf.*` and `output_layers.*` keep
      their names. With --config, the YAML (the reference's keys) is checked against
      the tensors and stored in the checkpoint, so `ipsnet eval --checkpoint OUT`
      needs nothing else; without it, give the config at evaluation time:
      `ipsnet eval --checkpoint OUT --config CONFIG.yaml`.

BatchNorm `num_batches_tracked` counters are kept when present (ipsnet accepts
checkpoints without them). Half-precision tensors are stored as float32.
"""
import argparse
import json
import os
import re
import struct
import sys

try:
    import torch
except ImportError:  # pragma: no cover
    sys.stderr.write("import_torch_weights.py: error: PyTorch is not installed "
                     "(Debian: apt-get install python3-torch)\n")
    sys.exit(2)


class ConvertError(Exception):
    pass


# ---- reading ---------------------------------------------------------------------------

def load_state_dict(path):
    if not os.path.exists(path):
        raise ConvertError("'%s' does not exist" % path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13: no weights_only
        obj = torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - pickles of whole modules, corrupt files
        raise ConvertError("cannot read '%s' as a state dict (%s). Save the weights with "
                           "torch.save(net.state_dict(), path), not the module itself" % (path, e))
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise ConvertError("'%s' holds a %s, not a state dict" % (path, type(obj).__name__))
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    out = {}
    for name, value in obj.items():
        if not torch.is_tensor(value):
            raise ConvertError("'%s': entry '%s' is a %s, not a tensor (is this a state dict?)"
                               % (path, name, type(value).__name__))
        if name.startswith("module."):  # saved from nn.DataParallel
            name = name[len("module."):]
        out[name] = value.detach().cpu()
    if not out:
        raise ConvertError("'%s' holds no tensors" % path)
    return out


# ---- writing (safetensors, as models/safetensors.h reads it) ---------------------------

_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64"}


def save_safetensors(path, tensors, metadata):
    header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
    blobs, off = [], 0
    for name, t in tensors.items():
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        elif not t.is_floating_point() and t.dtype != torch.int64:
            t = t.long()
        t = t.contiguous()
        b = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---- ResNet layout ----------------------------------------------------------------------

_RESNETS = {("basic", (2, 2, 2, 2)): "resnet18", ("basic", (3, 4, 6, 3)): "resnet34",
            ("bottleneck", (3, 4, 6, 3)): "resnet50", ("bottleneck", (3, 4, 23, 3)): "resnet101",
            ("bottleneck", (3, 8, 36, 3)): "resnet152"}


def describe_resnet(sd, prefix=""):
    """(arch name or '?', stages, blocks per stage, input channels) of torchvision-named tensors."""
    if prefix + "conv1.weight" not in sd:
        raise ConvertError("no '%sconv1.weight': not a torchvision ResNet" % prefix)
    kind = "bottleneck" if prefix + "layer1.0.conv3.weight" in sd else "basic"
    blocks = []
    for s in range(1, 5):
        idx = {int(m.group(1)) for k in sd for m in [re.match(re.escape(prefix) + r"layer%d\.(\d+)\." % s, k)] if m}
        if not idx:
            break
        blocks.append(max(idx) + 1)
    arch = _RESNETS.get((kind, tuple(blocks)), "?") if len(blocks) == 4 else None
    if arch is None:  # truncated (IPS: after layer2): name it by its blocks
        full = [v for (k, b), v in _RESNETS.items() if k == kind and b[:len(blocks)] == tuple(blocks)]
        arch = full[0] if full else "?"
    return arch, len(blocks), blocks, int(sd[prefix + "conv1.weight"].shape[1])


def convert_resnet(src, dst):
    sd = load_state_dict(src)
    dropped = [k for k in sd if k.startswith("fc.")]
    out = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    arch, stages, blocks, ch = describe_resnet(out)
    unknown = [k for k in out if not re.match(r"(conv1|bn1|layer[1-4])\.", k)]
    if unknown:
        raise ConvertError("'%s' has names a torchvision ResNet does not: %s" % (src, ", ".join(unknown[:5])))
    save_safetensors(dst, out, {"format": "torchvision-resnet", "arch": arch, "source": os.path.basename(src)})
    print("%s: %s (%d stages, blocks %s, %d input channels), %d tensors%s -> %s"
          % (src, arch, stages, blocks, ch, len(out), ", dropped " + " ".join(dropped) if dropped else "", dst))
    print("use it with the config key  pretrained_path: %s" % dst)


# ---- official IPS layout ----------------------------------------------------------------

# Children of the reference's nn.Sequential image encoder (torchvision ResNet order).
_SEQ_CHILDREN = {0: "conv1", 1: "bn1", 4: "layer1", 5: "layer2", 6: "layer3", 7: "layer4"}


def rename_ips(sd):
    conv_stem = "encoder.0.weight" in sd and sd["encoder.0.weight"].dim() == 4
    out, dropped = {}, []
    for name, t in sd.items():
        if name == "pos_enc" or name.startswith("pos_enc."):
            dropped.append(name)  # the fixed sinusoidal table; ipsnet computes it
            continue
        m = re.match(r"encoder\.(\d+)\.(.*)$", name)
        if conv_stem and m:
            i = int(m.group(1))
            if i not in _SEQ_CHILDREN:
                raise ConvertError("'%s': child %d of the encoder has no parameters in a ResNet "
                                   "(conv1, bn1, relu, maxpool, layer1..layer4, avgpool)" % (name, i))
            name = "encoder.%s.%s" % (_SEQ_CHILDREN[i], m.group(2))
        out[name] = t
    return out, dropped


def _shape(t):
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_config(cfg, sd, path):
    """The config's architecture keys against the tensors; every problem names the tensor and both shapes."""
    problems = []

    def expect(name, shape, key):
        if name not in sd:
            problems.append("%s: missing (config %s)" % (name, key))
        elif tuple(sd[name].shape) != tuple(shape):
            problems.append("%s: checkpoint %s vs config %s (%s)"
                            % (name, _shape(sd[name]), "(" + ", ".join(map(str, shape)) + ")", key))

    g = lambda k, d: cfg.get(k, d)  # noqa: E731
    D, H, D_k, D_v = int(g("D", 128)), int(g("H", 8)), int(g("D_k", 16)), int(g("D_v", 16))
    n_token, D_inner = int(g("n_token", 4)), int(g("D_inner", 512))
    expect("transf.crs_attn.q", (1, n_token, D), "n_token, D")
    expect("transf.crs_attn.q_w.weight", (H * D_k, D), "H*D_k, D")
    expect("transf.crs_attn.v_w.weight", (H * D_v, D), "H*D_v, D")
    expect("transf.mlp.w_1.weight", (D_inner, D), "D_inner, D")
    if g("is_image", True) and "encoder.conv1.weight" in sd:
        arch, stages, _, ch = describe_resnet(sd, "encoder.")
        want = (str(g("enc_type", "resnet18")), int(g("n_res_blocks", 2)), int(g("n_chan_in", 1)))
        if (arch, stages, ch) != want:
            problems.append("encoder: checkpoint %s with %d stages and %d input channels (encoder.conv1.weight %s) "
                            "vs config enc_type %s, n_res_blocks %d, n_chan_in %d"
                            % (arch, stages, ch, _shape(sd["encoder.conv1.weight"]), *want))
    tasks = g("tasks", None) or {}
    heads = {m.group(1) for k in sd for m in [re.match(r"output_layers\.(.+)\.0\.weight$", k)] if m}
    names = set()
    for t in (tasks.values() if isinstance(tasks, dict) else tasks):
        names.add(str(t["name"]))
        expect("output_layers.%s.0.weight" % t["name"], (int(t.get("n_class", g("n_class", 10))), D), "n_class, D")
    if names and heads != names:
        problems.append("task heads: checkpoint %s vs config %s" % (sorted(heads), sorted(names)))
    if problems:
        raise ConvertError("config '%s' does not match the tensors:\n  %s" % (path, "\n  ".join(problems)))


def convert_ips(src, dst, config_path):
    sd, dropped = rename_ips(load_state_dict(src))
    meta = {"format": "ipsnet-checkpoint-1", "source": os.path.basename(src)}
    if config_path:
        with open(config_path) as f:
            text = f.read()
        try:
            import yaml
        except ImportError:
            yaml = None
            print("note: PyYAML is not installed; the config is stored unchecked (ipsnet checks it when loading)")
        if yaml is not None:
            check_config(yaml.safe_load(text) or {}, sd, config_path)
        meta["config"] = text
    save_safetensors(dst, sd, meta)
    n_bn = sum(1 for k in sd if k.endswith(".num_batches_tracked"))
    print("%s: %d tensors%s%s -> %s" % (src, len(sd), "" if n_bn else " (no num_batches_tracked: fine)",
                                         ", dropped " + " ".join(dropped) if dropped else "", dst))
    if config_path:
        print("evaluate:  ipsnet eval --checkpoint %s --data DATA_DIR" % dst)
    else:
        print("evaluate:  ipsnet eval --checkpoint %s --config CONFIG.yaml --data DATA_DIR" % dst)


def main(argv):
    p = argparse.ArgumentParser(prog="import_torch_weights.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    r = sub.add_parser("resnet", help="torchvision ResNet .pth -> encoder checkpoint for pretrained_path")
    r.add_argument("src")
    r.add_argument("dst")
    i = sub.add_parser("ips", help="official IPS state dict .pt -> ipsnet checkpoint")
    i.add_argument("src")
    i.add_argument("dst")
    i.add_argument("--config", default="", help="the model's YAML config, checked and stored in the checkpoint")
    a = p.parse_args(argv)
    try:
        if a.what == "resnet":
            convert_resnet(a.src, a.dst)
        else:
            convert_ips(a.src, a.dst, a.config)
    except (ConvertError, OSError) as e:
        sys.stderr.write("import_torch_weights.py: error: %s\n" % e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
