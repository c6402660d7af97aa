"""Test-only PyTorch re-creation of the original CenterNet Hourglass-104 (``exkp``).

Written for these tests from the structure and state-dict key names of the original's
``src/lib/models/networks/large_hourglass.py`` (xingyizhou/CenterNet, itself from
CornerNet): the attribute names below *are* the checkpoint keys, so they must not change.

Arithmetic the TF model has to reproduce:
- every k x k convolution pads (k - 1) // 2 on all four sides, stride 2 included
  (TF's 'same' pads stride-2 convolutions asymmetrically: 0 before, 1 after for 3x3);
- BatchNorm2d with eps 1e-5; ReLU after BN (and after the residual add);
- down path: no pooling, the first residual of ``low1`` has stride 2;
- up path: ``low3`` (the channel change happens in its *last* block), nearest 2x
  upsampling, then ``up1 + up2``;
- between stacks: ``relu(inters_[i](inter) + cnvs_[i](cnv))`` -> ``inters[i]`` (residual);
- heads: 3x3 conv with bias, ReLU, 1x1 conv with bias; 'wh' is (w, h), 'reg' is (dx, dy);
- multi_pose heads (``pose_heads``): 'hps' 2K joint offsets from the centre, (dx, dy) per
  joint interleaved (x0, y0, x1, y1, ...); 'hm_hp' K keypoint heatmaps; 'hp_offset' (dx, dy).
  Every head whose name contains 'hm' starts with bias -2.19 (the original's test).
"""
from __future__ import annotations

import torch
from torch import nn

HOURGLASS104 = dict(order=5, dims=(256, 256, 384, 384, 384, 512), blocks=(2, 2, 2, 2, 2, 4), stacks=2)


class ConvBnRelu(nn.Module):
    """Keys: conv.weight (+ conv.bias without BN), bn.* ."""

    def __init__(self, k: int, cin: int, cout: int, stride: int = 1, with_bn: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, bias=not with_bn)
        self.bn = nn.BatchNorm2d(cout) if with_bn else nn.Identity()

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Residual(nn.Module):
    """Keys: conv1, bn1, conv2, bn2, and skip.0 (conv) / skip.1 (BN) when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        changes = stride != 1 or cin != cout
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                  nn.BatchNorm2d(cout)) if changes else nn.Sequential()

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + self.skip(x))


def _blocks(cin: int, cout: int, n: int, stride: int = 1) -> nn.Sequential:
    """n residuals; the first changes channels (and stride)."""
    return nn.Sequential(Residual(cin, cout, stride), *[Residual(cout, cout) for _ in range(n - 1)])


def _blocks_revr(cin: int, cout: int, n: int) -> nn.Sequential:
    """n residuals; the last changes channels."""
    return nn.Sequential(*[Residual(cin, cin) for _ in range(n - 1)], Residual(cin, cout))


class HourglassModule(nn.Module):
    """One level ('kp_module'): keys up1, low1, low2 (nested module or blocks), low3."""

    def __init__(self, order: int, dims, blocks):
        super().__init__()
        cur, nxt = dims[0], dims[1]
        self.up1 = _blocks(cur, cur, blocks[0])
        self.low1 = _blocks(cur, nxt, blocks[0], stride=2)
        self.low2 = HourglassModule(order - 1, dims[1:], blocks[1:]) if order > 1 else _blocks(nxt, nxt, blocks[1])
        self.low3 = _blocks_revr(nxt, cur, blocks[0])

    def forward(self, x):
        up2 = nn.functional.interpolate(self.low3(self.low2(self.low1(x))), scale_factor=2, mode="nearest")
        return self.up1(x) + up2


def pose_heads(num_joints: int = 17) -> dict:
    """The original's multi_pose heads for one class (person) with ``num_joints`` keypoints."""
    return {"hm": 1, "wh": 2, "hps": 2 * num_joints, "reg": 2, "hm_hp": num_joints, "hp_offset": 2}


def _head(cnv_dim: int, mid: int, out: int, bias: float = 0.0) -> nn.Sequential:
    head = nn.Sequential(ConvBnRelu(3, cnv_dim, mid, with_bn=False), nn.Conv2d(mid, out, 1))
    nn.init.constant_(head[1].bias, bias)
    return head


class HourglassNet(nn.Module):
    """The original's ``HourglassNet`` with heads {'hm': C, 'wh': 2, 'reg': 2} (or ``heads``).

    ``forward`` takes a normalised BGR image [B, 3, S, S] and returns one dict per stack
    with 'hm' [B, C, S/4, S/4] logits, 'wh' and 'reg' [B, 2, S/4, S/4].
    """

    def __init__(self, num_classes: int = 80, order: int = 5, dims=HOURGLASS104["dims"],
                 blocks=HOURGLASS104["blocks"], stacks: int = 2, cnv_dim: int = 256, heads: dict | None = None):
        super().__init__()
        cur = dims[0]
        self.heads = dict(heads) if heads else {"hm": num_classes, "wh": 2, "reg": 2}
        self.pre = nn.Sequential(ConvBnRelu(7, 3, 128, stride=2), Residual(128, cur, stride=2))
        self.kps = nn.ModuleList([HourglassModule(order, dims, blocks) for _ in range(stacks)])
        self.cnvs = nn.ModuleList([ConvBnRelu(3, cur, cnv_dim) for _ in range(stacks)])
        self.inters = nn.ModuleList([Residual(cur, cur) for _ in range(stacks - 1)])
        self.inters_ = nn.ModuleList([nn.Sequential(nn.Conv2d(cur, cur, 1, bias=False), nn.BatchNorm2d(cur))
                                      for _ in range(stacks - 1)])
        self.cnvs_ = nn.ModuleList([nn.Sequential(nn.Conv2d(cnv_dim, cur, 1, bias=False), nn.BatchNorm2d(cur))
                                    for _ in range(stacks - 1)])
        for name, out in self.heads.items():
            bias = -2.19 if "hm" in name else 0.0  # the original's test: hm and hm_hp
            setattr(self, name, nn.ModuleList([_head(cnv_dim, cur, out, bias) for _ in range(stacks)]))

    def forward(self, image):
        inter = self.pre(image)
        outs = []
        for i, (kp, cnv_layer) in enumerate(zip(self.kps, self.cnvs)):
            cnv = cnv_layer(kp(inter))
            outs.append({name: getattr(self, name)[i](cnv) for name in self.heads})
            if i < len(self.kps) - 1:
                inter = self.inters[i](torch.relu(self.inters_[i](inter) + self.cnvs_[i](cnv)))
        return outs


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics that keep activations O(1); returns the model in eval mode.

    Convolutions get N(0, 1/fan_in) (biases + N(0, 0.01)); BN gamma U(0.5, 1), beta and
    running mean U(-0.1, 0.1), running var U(0.5, 1.5): every BN tensor holds distinct
    values, so a swapped mean/var or gamma/beta shows in the outputs, and the head maps
    of the full network stay within a few units at any input size.
    """
    g = torch.Generator().manual_seed(seed)

    def uniform(t, lo, hi):
        t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=g))

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    m.bias.add_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, nn.BatchNorm2d):
                uniform(m.weight, 0.5, 1.0)
                uniform(m.bias, -0.1, 0.1)
                uniform(m.running_mean, -0.1, 0.1)
                uniform(m.running_var, 0.5, 1.5)
    return model.eval()
