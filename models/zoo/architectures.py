"""The CNNs people deploy, written in plain torch (no torchvision: its wheel does not load beside the CPU torch
these machines use), each as its authors describe it. Random weights, but BatchNorm statistics drawn too, so
that folding them is not a no-op.

- ``resnet18``: He et al. 2016, ImageNet (224x224): 7x7/2 stem, 3x3/2 max pool (padded), four stages of
  basic blocks (1x1/2 projection shortcuts), global average pool, 1000 classes.
- ``mobilenet_v2``: Sandler et al. 2018, ImageNet, width 1.0: inverted residuals with ReLU6.
- ``mobilenet_v3_small``: Howard et al. 2019, ImageNet: hard-swish, squeeze-excite with hard-sigmoid.
- ``squeezenet1_1``: Iandola et al. 2016 (v1.1), ImageNet: fire modules, ceil-mode 3x3/2 max pools.
- ``resnet8``: MLPerf Tiny image classification (CIFAR-10, 32x32): 16/32/64 channels, 1x1 shortcuts.
- ``resnet20``: He et al. 2016 CIFAR-10 network with option-A shortcuts (subsample by 2, pad channels with
  zeros), the shortcut torch exports as Slice and Pad.
- ``ds_cnn``: MLPerf Tiny keyword spotting (49x10 MFCC, 12 classes): 10x4/2 stem, 4 depthwise-separable blocks.
- ``mobilenet_v1_025``: MLPerf Tiny visual wake words (96x96, width 0.25, 2 classes).
- ``vgg11``: Simonyan & Zisserman configuration A with BatchNorm, at CIFAR-10 size (32x32, 512 -> 10 head).
- ``unet``: Ronneberger et al. 2015, small (64x64, 3 levels), one up-path by nearest Resize + conv and one by
  ConvTranspose, skip connections by Concat, sigmoid output.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ARCHITECTURES", "build"]


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c)


def conv_bn(cin, cout, k, stride=1, groups=1, act: type[nn.Module] | None = nn.ReLU, padding=None):
    padding = (k - 1) // 2 if padding is None else padding
    layers = [nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=False), _bn(cout)]
    if act is not None:
        layers.append(act(inplace=True) if act in (nn.ReLU, nn.ReLU6, nn.Hardswish) else act())
    return nn.Sequential(*layers)


# --- ResNets ---------------------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, shortcut="B"):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3, act=None)
        self.option_a = shortcut == "A" and (stride != 1 or cin != cout)
        self.extra = (cout - cin) // 2
        self.shortcut = conv_bn(cin, cout, 1, stride, act=None) if (stride != 1 or cin != cout) and \
            shortcut == "B" else nn.Identity()

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        if self.option_a:
            s = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.extra, self.extra), "constant", 0.0)
        else:
            s = self.shortcut(x)
        return F.relu(y + s)


class ResNet(nn.Module):
    def __init__(self, stem: nn.Module, stages, classes: int, shortcut="B"):
        super().__init__()
        self.stem = stem
        blocks, cin = [], stages[0][0]
        for cout, count, stride in stages:
            for i in range(count):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1, shortcut))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet18():
    stem = nn.Sequential(conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
    return ResNet(stem, [(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)], 1000)


def resnet8():
    return ResNet(conv_bn(3, 16, 3), [(16, 1, 1), (32, 1, 2), (64, 1, 2)], 10)


def resnet20():
    return ResNet(conv_bn(3, 16, 3), [(16, 3, 1), (32, 3, 2), (64, 3, 2)], 10, shortcut="A")


# --- MobileNets ------------------------------------------------------------------------------------------------

class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, hidden, kernel=3, act=nn.ReLU6, se=False):
        super().__init__()
        layers = [] if hidden == cin else [conv_bn(cin, hidden, 1, act=act)]
        layers.append(conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers.append(conv_bn(hidden, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class SqueezeExcite(nn.Module):
    def __init__(self, c):
        super().__init__()
        squeezed = _divisible(c // 4)
        self.fc1 = nn.Conv2d(c, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


def _divisible(v, divisor=8):
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


class MobileNet(nn.Module):
    def __init__(self, stem, blocks, head, classifier):
        super().__init__()
        self.stem, self.blocks, self.head, self.classifier = stem, nn.Sequential(*blocks), head, classifier

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def mobilenet_v2():
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]
    blocks, cin = [], 32
    for t, c, n, s in settings:
        for i in range(n):
            blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, cin * t))
            cin = c
    return MobileNet(conv_bn(3, 32, 3, 2, act=nn.ReLU6), blocks, conv_bn(320, 1280, 1, act=nn.ReLU6),
                     nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000)))


def mobilenet_v3_small():
    # kernel, expanded channels, out, squeeze-excite, activation, stride (Howard et al., table 2)
    settings = [(3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
                (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
                (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
                (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1)]
    blocks, cin = [], 16
    for k, hidden, cout, se, act, s in settings:
        blocks.append(InvertedResidual(cin, cout, s, hidden, k, nn.ReLU if act == "RE" else nn.Hardswish, se))
        cin = cout
    classifier = nn.Sequential(nn.Linear(576, 1024), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(1024, 1000))
    return MobileNet(conv_bn(3, 16, 3, 2, act=nn.Hardswish), blocks, conv_bn(96, 576, 1, act=nn.Hardswish),
                     classifier)


def mobilenet_v1_025():
    width = 0.25
    channels = [int(c * width) for c in (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)]
    strides = [2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    blocks = []
    for i in range(1, len(channels)):
        cin, cout = channels[i - 1], channels[i]
        blocks.append(nn.Sequential(conv_bn(cin, cin, 3, strides[i], groups=cin), conv_bn(cin, cout, 1)))
    return MobileNet(conv_bn(3, channels[0], 3, strides[0]), blocks, nn.Identity(), nn.Linear(channels[-1], 2))


# --- the others ------------------------------------------------------------------------------------------------

class Fire(nn.Module):
    def __init__(self, cin, squeeze, expand):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x):
        s = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1(s)), F.relu(self.expand3(s))], 1)


class SqueezeNet(nn.Module):
    def __init__(self):
        super().__init__()
        pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, 2), nn.ReLU(inplace=True), pool,
            Fire(64, 16, 64), Fire(128, 16, 64), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(128, 32, 128), Fire(256, 32, 128), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(256, 48, 192), Fire(384, 48, 192), Fire(384, 64, 256), Fire(512, 64, 256))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(512, 1000, 1), nn.ReLU(inplace=True))

    def forward(self, x):
        return torch.flatten(F.adaptive_avg_pool2d(self.classifier(self.features(x)), 1), 1)


class DSCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(1, 64, (10, 4), 2, padding=(5, 1))
        self.blocks = nn.Sequential(*[nn.Sequential(conv_bn(64, 64, 3, groups=64), conv_bn(64, 64, 1))
                                      for _ in range(4)])
        self.pool = nn.AvgPool2d((25, 5))          # the whole 25x5 map of a 49x10 input, as MLPerf Tiny's
        self.fc = nn.Linear(64, 12)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def vgg11():
    layers, cin = [], 3
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers.append(conv_bn(cin, v, 3))
            cin = v
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, 10))


class UNet(nn.Module):
    def __init__(self, c=16):
        super().__init__()
        self.enc1, self.enc2 = nn.Sequential(conv_bn(3, c, 3), conv_bn(c, c, 3)), nn.Sequential(
            conv_bn(c, 2 * c, 3), conv_bn(2 * c, 2 * c, 3))
        self.bottom = nn.Sequential(conv_bn(2 * c, 4 * c, 3), conv_bn(4 * c, 4 * c, 3))
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.dec2 = nn.Sequential(conv_bn(4 * c, 2 * c, 3), conv_bn(2 * c, 2 * c, 3))
        self.up1 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * c, c, 3, padding=1))
        self.dec1 = nn.Sequential(conv_bn(2 * c, c, 3), conv_bn(c, c, 3))
        self.out = nn.Conv2d(c, 1, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottom(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return torch.sigmoid(self.out(d1))


#: name -> (constructor, input shape without the batch)
ARCHITECTURES = {
    "resnet18": (resnet18, (3, 224, 224)),
    "mobilenet_v2": (mobilenet_v2, (3, 224, 224)),
    "mobilenet_v3_small": (mobilenet_v3_small, (3, 224, 224)),
    "squeezenet1_1": (lambda: SqueezeNet(), (3, 224, 224)),
    "resnet8": (resnet8, (3, 32, 32)),
    "resnet20": (resnet20, (3, 32, 32)),
    "ds_cnn": (lambda: DSCNN(), (1, 49, 10)),
    "mobilenet_v1_025": (mobilenet_v1_025, (3, 96, 96)),
    "vgg11": (vgg11, (3, 32, 32)),
    "unet": (lambda: UNet(), (3, 64, 64)),
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """The network ``name`` in eval mode with seeded random weights and BatchNorm statistics, and its input shape."""
    constructor, shape = ARCHITECTURES[name]
    torch.manual_seed(seed)
    model = constructor()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval(), shape
