"""Writes the real PyTorch exports beside it: small torchvision-shaped nets built from torch.nn
(a MobileNetV2/V3-style stack: inverted residuals with depthwise convolutions, squeeze-and-excite
with Hardsigmoid, ReLU6, SiLU and Hardswish; a ResNet-style stack: max pool, basic blocks, a
stride-2 shortcut), random weights and BatchNorm statistics, exported with torch.onnx.export
(TorchScript exporter, opset 17, a dynamic batch axis). tests/test_onnx_read.py reads them.

    python -m venv --system-site-packages /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0
    /tmp/torchenv/bin/python tests/data/onnx/make_fixtures.py
"""

from pathlib import Path

import torch
import torch.nn as nn

HERE = Path(__file__).parent


def conv_bn(cin, cout, k=3, stride=1, groups=1, act=nn.ReLU6):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         act())


class SqueezeExcite(nn.Module):
    """torchvision's SqueezeExcitation with MobileNetV3's Hardsigmoid gate."""

    def __init__(self, channels, squeezed):
        super().__init__()
        self.pool, self.act, self.gate = nn.AdaptiveAvgPool2d(1), nn.ReLU(), nn.Hardsigmoid()
        self.fc1, self.fc2 = nn.Conv2d(channels, squeezed, 1), nn.Conv2d(squeezed, channels, 1)

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, expand, stride, se=True, act=nn.ReLU6):
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn(cin, hidden, 1, act=act), conv_bn(hidden, hidden, 3, stride, hidden, act=act)]
        layers += [SqueezeExcite(hidden, max(hidden // 4, 8))] if se else []
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block, self.residual = nn.Sequential(*layers), stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride, act=nn.ReLU)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.down = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv2(self.conv1(x)) + (x if self.down is None else self.down(x)))


def mobilenet(classes=10):
    return nn.Sequential(conv_bn(1, 16, 3, 2), InvertedResidual(16, 16, 2, 1), InvertedResidual(16, 24, 3, 2, se=False),
                         InvertedResidual(24, 24, 3, 1, act=nn.SiLU), InvertedResidual(24, 32, 3, 2, act=nn.Hardswish),
                         conv_bn(32, 64, 1, act=nn.Hardswish), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, 32), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(32, classes))


def resnet(classes=10):
    return nn.Sequential(conv_bn(1, 16, 3, 1, act=nn.ReLU), nn.MaxPool2d(3, 2, 1), BasicBlock(16, 16, 1),
                         BasicBlock(16, 32, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, classes))


def main() -> None:
    torch.manual_seed(0)
    for name, model in (("mobilenet_torch", mobilenet()), ("resnet_torch", resnet())):
        model.eval()
        for mod in model.modules():   # statistics far from the identity, so folding is really exercised
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.3, 0.3)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.data.uniform_(0.5, 1.5)
                mod.bias.data.uniform_(-0.3, 0.3)
        torch.onnx.export(model, (torch.randn(1, 1, 28, 28),), str(HERE / f"{name}.onnx"), input_names=["input"],
                          output_names=["output"], opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})


if __name__ == "__main__":
    main()
