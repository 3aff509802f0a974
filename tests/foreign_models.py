"""PyTorch CNNs written the way users write them (not bioconv's zoo), for MNIST-shaped input (1, 28, 28).

Each factory returns a fresh model with random weights; ``randomize_bn`` gives its
BatchNorm layers non-trivial statistics so that folding is actually tested.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class LeNet5(nn.Module):
    """LeNet-5 with max-pool; the pool is applied to the conv output before the ReLU."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, n_classes)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016): BN-ReLU-conv twice, identity or 1×1 shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    def __init__(self, n_classes: int = 10, width: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, stride=2, padding=1)
        self.layer1 = PreActBlock(width, width)
        self.layer2 = PreActBlock(width, 2 * width, stride=2)
        self.bn = nn.BatchNorm2d(2 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, n_classes)

    def forward(self, x):
        out = self.layer2(self.layer1(self.stem(x)))
        out = self.pool(F.relu(self.bn(out)))
        return self.fc(out.flatten(1))


class Inception(nn.Module):
    """An Inception-style block: 1×1, 3×3 and 5×5 branches concatenated along channels."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2))
        self.b1 = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU())
        self.b3 = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.b5 = nn.Sequential(nn.Conv2d(8, 4, 5, padding=2), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(14 * 7 * 7, 32), nn.ReLU(),
                                  nn.Linear(32, n_classes))

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.b1(x), self.b3(x), self.b5(x)], dim=1)
        return self.head(self.pool(x))


class FunctionalNet(nn.Module):
    """Functional ReLUs, ``x.relu()`` and ``x.view(x.size(0), -1)`` in forward; a final softmax."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.f1 = nn.Linear(12 * 7 * 7, 48)
        self.f2 = nn.Linear(48, n_classes)

    def forward(self, x):
        x = F.avg_pool2d(F.relu(self.c1(x)), 2)
        x = self.c2(x).relu()
        x = x.view(x.size(0), -1)
        x = torch.relu(self.f1(x))
        return F.softmax(self.f2(x), dim=1)


class DepthwiseSeparable(nn.Module):
    """MobileNet-style depthwise (one dilated) + pointwise convolutions with BN."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.dw1 = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.pw1 = nn.Conv2d(8, 16, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.dw2 = nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16, padding_mode="replicate")
        self.pw2 = nn.Conv2d(16, 24, 1)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(24, n_classes)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = F.relu(self.bn1(self.dw1(x)))
        x = F.relu(self.bn2(self.pw1(x)))
        x = F.relu(self.dw2(x))
        x = F.relu(self.pw2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class ReLU6Net(nn.Module):
    """Clipped activations: ReLU6 after conv+BN and Hardtanh(0, 4) after a linear layer."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU6())
        self.fc1 = nn.Linear(16 * 7 * 7, 64)
        self.act = nn.Hardtanh(0.0, 4.0)
        self.fc2 = nn.Linear(64, n_classes)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(self.features(x).flatten(1))))


FOREIGN = {
    "lenet5": LeNet5,
    "preact_resnet": PreActResNet,
    "inception": Inception,
    "functional": FunctionalNet,
    "depthwise": DepthwiseSeparable,
    "relu6": ReLU6Net,
}


@torch.no_grad()
def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random affine parameters and running statistics (eval mode)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.copy_(0.5 + torch.rand(n, generator=gen))
            m.bias.copy_(0.2 * torch.randn(n, generator=gen))
            m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return model.eval()


def make(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_bn(FOREIGN[name](), seed)
