#!/usr/bin/env python3
"""PyTorch's own bfloat16 error on gradients, the yardstick of
tests/train/test_bf16_train.cpp (PrecisionBf16Train.OneStepCloseToFloat32):
one training-mode step of a ResNet-18 cut after layer2 (ipsnet's
Megapixel MNIST encoder, 1 input channel) over 64 sparse 50x50 patches, in
float32 and under torch.autocast('cpu', dtype=torch.bfloat16) from the same
weights; prints the parameters whose gradients agree least (cosine, then the
relative difference of the norms). Needs torch and torchvision (Debian's
python3-torch, python3-torchvision); never used at run time.

    /usr/bin/python3 scripts/bf16_grad_cosines.py
"""
import torch
import torchvision
torch.manual_seed(0)
m = torchvision.models.resnet18()
m.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
enc = torch.nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(128, 10))
x = torch.zeros(64, 1, 50, 50)
# sparse digit-like content: random blobs in some patches
x[:32, :, 10:40, 10:40] = torch.rand(32, 1, 30, 30)
y = torch.randint(0, 10, (64,))
def grads(bf16):
    enc.zero_grad()
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
        out = enc(x)
    loss = torch.nn.functional.cross_entropy(out.float(), y)
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in enc.named_parameters()}, loss.item()
enc.train()
sd = {k: v.clone() for k, v in enc.state_dict().items()}
g32, l32 = grads(False); enc.load_state_dict(sd)
g16, l16 = grads(True); enc.load_state_dict(sd)
print('loss', l32, l16)
worst = []
for n in g32:
    a, b = g32[n].flatten().double(), g16[n].flatten().double()
    cos = (a @ b / (a.norm() * b.norm())).item()
    worst.append((cos, abs(b.norm()/a.norm()-1).item(), n))
worst.sort()
for w in worst[:6]: print('%.6f %.3e %s' % w)
print('max norm diff', max(worst, key=lambda t: t[1]))
