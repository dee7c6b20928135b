"""BVLC's AlexNet, CaffeNet, GoogLeNet and VGG-16 written by hand in plain ``torch.nn``.

This is the baseline of ``vs_reference.py``: what a PyTorch user writes after reading
the Caffe prototxt — ``nn.LocalResponseNorm`` for LRN, ``ceil_mode=True`` max pools,
``nn.ReLU(inplace=True)``, ``nn.Dropout``, softmax at the end.  Layer names follow the
prototxt so :func:`copy_from_netdef` can give both implementations the same weights.
The deploy nets end in ``prob`` (softmax) like BVLC's.
"""
from __future__ import annotations

import torch
from torch import nn


def _conv(name: str, cin: int, cout: int, k: int, s: int = 1, p: int = 0, g: int = 1):
    return name, nn.Conv2d(cin, cout, k, s, p, groups=g)


class Seq(nn.Module):
    """Named layers applied in order (``nn.Sequential`` with Caffe's layer names)."""

    def __init__(self, layers: list[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.order = [n for n, _ in layers]
        for n, m in layers:
            self.add_module(n.replace("/", "_"), m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for n in self.order:
            m = getattr(self, n.replace("/", "_"))
            if isinstance(m, nn.Linear) and x.dim() > 2:
                x = torch.flatten(x, 1)
            x = m(x)
        return x


def _relu() -> nn.Module:
    return nn.ReLU(inplace=True)


def _lrn() -> nn.Module:
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)


def _pool(k: int = 3, s: int = 2) -> nn.Module:
    return nn.MaxPool2d(k, s, ceil_mode=True)


def _classifier(cin: int) -> list[tuple[str, nn.Module]]:
    return [("fc6", nn.Linear(cin, 4096)), ("relu6", _relu()), ("drop6", nn.Dropout(0.5)),
            ("fc7", nn.Linear(4096, 4096)), ("relu7", _relu()), ("drop7", nn.Dropout(0.5)),
            ("fc8", nn.Linear(4096, 1000)), ("prob", nn.Softmax(dim=1))]


def alexnet() -> nn.Module:
    """BVLC AlexNet (deploy): LRN after ReLU, before pooling; conv2/4/5 in 2 groups."""
    return Seq([
        _conv("conv1", 3, 96, 11, 4), ("relu1", _relu()), ("norm1", _lrn()), ("pool1", _pool()),
        _conv("conv2", 96, 256, 5, p=2, g=2), ("relu2", _relu()), ("norm2", _lrn()),
        ("pool2", _pool()),
        _conv("conv3", 256, 384, 3, p=1), ("relu3", _relu()),
        _conv("conv4", 384, 384, 3, p=1, g=2), ("relu4", _relu()),
        _conv("conv5", 384, 256, 3, p=1, g=2), ("relu5", _relu()), ("pool5", _pool()),
        *_classifier(256 * 6 * 6)])


def caffenet() -> nn.Module:
    """BVLC reference CaffeNet: like AlexNet with pooling before LRN."""
    return Seq([
        _conv("conv1", 3, 96, 11, 4), ("relu1", _relu()), ("pool1", _pool()), ("norm1", _lrn()),
        _conv("conv2", 96, 256, 5, p=2, g=2), ("relu2", _relu()), ("pool2", _pool()),
        ("norm2", _lrn()),
        _conv("conv3", 256, 384, 3, p=1), ("relu3", _relu()),
        _conv("conv4", 384, 384, 3, p=1, g=2), ("relu4", _relu()),
        _conv("conv5", 384, 256, 3, p=1, g=2), ("relu5", _relu()), ("pool5", _pool()),
        *_classifier(256 * 6 * 6)])


VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M"]


def vgg16() -> nn.Module:
    """VGG-16 (configuration D): 3×3/1 pad 1 convolutions, 2×2/2 max pools."""
    layers: list[tuple[str, nn.Module]] = []
    cin, block, idx = 3, 1, 1
    for v in VGG16_CFG:
        if v == "M":
            layers.append((f"pool{block}", nn.MaxPool2d(2, 2, ceil_mode=True)))
            block, idx = block + 1, 1
            continue
        layers += [_conv(f"conv{block}_{idx}", cin, int(v), 3, p=1), (f"relu{block}_{idx}", _relu())]
        cin, idx = int(v), idx + 1
    return Seq(layers + _classifier(512 * 7 * 7))


class Inception(nn.Module):
    """GoogLeNet's inception block: 1×1 | 1×1→3×3 | 1×1→5×5 | pool 3/1→1×1, concatenated."""

    def __init__(self, prefix: str, cin: int, c1: int, r3: int, c3: int, r5: int, c5: int,
                 pp: int) -> None:
        super().__init__()
        self.prefix = prefix
        self.b1 = nn.Conv2d(cin, c1, 1)
        self.r3, self.c3 = nn.Conv2d(cin, r3, 1), nn.Conv2d(r3, c3, 3, padding=1)
        self.r5, self.c5 = nn.Conv2d(cin, r5, 1), nn.Conv2d(r5, c5, 5, padding=2)
        self.pool, self.pp = nn.MaxPool2d(3, 1, 1, ceil_mode=True), nn.Conv2d(cin, pp, 1)
        self.relu = _relu()

    def named_convs(self) -> dict[str, nn.Conv2d]:
        p = self.prefix
        return {f"{p}/1x1": self.b1, f"{p}/3x3_reduce": self.r3, f"{p}/3x3": self.c3,
                f"{p}/5x5_reduce": self.r5, f"{p}/5x5": self.c5, f"{p}/pool_proj": self.pp}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.relu
        return torch.cat([r(self.b1(x)), r(self.c3(r(self.r3(x)))), r(self.c5(r(self.r5(x)))),
                          r(self.pp(self.pool(x)))], 1)


GOOGLENET_BLOCKS = [  # name, in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj
    ("inception_3a", 192, 64, 96, 128, 16, 32, 32),
    ("inception_3b", 256, 128, 128, 192, 32, 96, 64), "pool3",
    ("inception_4a", 480, 192, 96, 208, 16, 48, 64),
    ("inception_4b", 512, 160, 112, 224, 24, 64, 64),
    ("inception_4c", 512, 128, 128, 256, 24, 64, 64),
    ("inception_4d", 512, 112, 144, 288, 32, 64, 64),
    ("inception_4e", 528, 256, 160, 320, 32, 128, 128), "pool4",
    ("inception_5a", 832, 256, 160, 320, 32, 128, 128),
    ("inception_5b", 832, 384, 192, 384, 48, 128, 128),
]


def googlenet() -> nn.Module:
    """BVLC GoogLeNet (deploy, no auxiliary classifiers)."""
    layers: list[tuple[str, nn.Module]] = [
        _conv("conv1/7x7_s2", 3, 64, 7, 2, 3), ("conv1/relu_7x7", _relu()),
        ("pool1/3x3_s2", _pool()), ("pool1/norm1", _lrn()),
        _conv("conv2/3x3_reduce", 64, 64, 1), ("conv2/relu_3x3_reduce", _relu()),
        _conv("conv2/3x3", 64, 192, 3, p=1), ("conv2/relu_3x3", _relu()),
        ("conv2/norm2", _lrn()), ("pool2/3x3_s2", _pool())]
    for b in GOOGLENET_BLOCKS:
        if isinstance(b, str):
            layers.append((f"{b}/3x3_s2", _pool()))
        else:
            layers.append((b[0], Inception(*b)))
    layers += [("pool5/7x7_s1", nn.AvgPool2d(7, 1, ceil_mode=True)),
               ("pool5/drop_7x7_s1", nn.Dropout(0.4)),
               ("loss3/classifier", nn.Linear(1024, 1000)), ("prob", nn.Softmax(dim=1))]
    return Seq(layers)


BUILDERS = {"alexnet": alexnet, "caffenet": caffenet, "googlenet": googlenet, "vgg16": vgg16}


def named_learnables(model: nn.Module) -> dict[str, nn.Module]:
    """Caffe layer name -> conv/linear module of the reference net."""
    out: dict[str, nn.Module] = {}
    for n in model.order:  # type: ignore[attr-defined]
        m = getattr(model, n.replace("/", "_"))
        if isinstance(m, Inception):
            out.update(m.named_convs())
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            out[n] = m
    return out


@torch.no_grad()
def copy_from_netdef(ref: nn.Module, netdef_module: nn.Module) -> int:
    """Copy every conv/fc weight and bias of the netdef net into ``ref``; returns the count
    of parameters copied (must equal both nets' totals)."""
    state = netdef_module.state_dict()
    copied = 0
    for name, m in named_learnables(ref).items():
        w, b = state[f"{name}.0"], state[f"{name}.1"]
        m.weight.copy_(w.reshape(m.weight.shape))
        m.bias.copy_(b.reshape(m.bias.shape))
        copied += w.numel() + b.numel()
    return copied
