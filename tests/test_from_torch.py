"""from_torch: BN folding, dropout/ReLU handling, layer names, and every refusal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from bioconv import ir
from bioconv.ann import build_model
from bioconv.from_torch import CONVERTERS, check, from_torch

torch.set_num_threads(1)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN running statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.25)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    return model.eval()


def torch_out(model, x: np.ndarray, double=False) -> np.ndarray:
    with torch.no_grad():
        t = torch.from_numpy(x)
        return (model.double()(t) if double else model(t.float())).numpy()


@pytest.fixture
def bn_model():
    torch.manual_seed(0)
    return randomize_bn(build_model("12x12x2-6c3BN-p2-D0.2-8c3BN-mp2-16FCBN-D0.4-5FC", n_classes=5))


def test_bn_folding_keeps_output(bn_model, rng):
    graph = from_torch(bn_model, (2, 12, 12))
    x = rng.uniform(0, 1, size=(16, 2, 12, 12))
    ref = torch_out(bn_model, x)
    got = graph.forward(x)["fc2"]
    assert np.max(np.abs(got - ref)) < 1e-5
    assert graph.meta["bn_folded"] == ["conv1", "conv2", "fc1"]
    assert np.max(np.abs(graph.forward(x)["fc2"] - torch_out(bn_model, x, double=True))) < 1e-10


def test_bn_fold_formula(rng):
    torch.manual_seed(1)
    model = randomize_bn(nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3, eps=1e-3), nn.ReLU(), nn.Flatten(),
                                       nn.Linear(12, 2)), seed=3)
    conv, bn = model[0], model[1]
    graph = from_torch(model, (2, 4, 4))
    sigma = np.sqrt(bn.running_var.double().numpy() + 1e-3)
    gamma, beta, mu = (t.detach().double().numpy() for t in (bn.weight, bn.bias, bn.running_mean))
    w, b = conv.weight.detach().double().numpy(), conv.bias.detach().double().numpy()
    np.testing.assert_allclose(graph.layer("conv1").weight, (gamma / sigma)[:, None, None, None] * w, rtol=1e-12)
    np.testing.assert_allclose(graph.layer("conv1").bias, gamma / sigma * (b - mu) + beta, rtol=1e-12)


def test_names_dropout_relu_and_input(bn_model):
    graph = from_torch(bn_model, (2, 12, 12), rate_scale=400.0)
    assert [l.name for l in graph.layers] == ["conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "fc2"]
    assert [type(l).__name__ for l in graph.layers] == ["Conv2d", "AvgPool2d", "Conv2d", "MaxPool2d", "Flatten",
                                                        "Dense", "Dense"]
    assert graph.input.shape == (2, 12, 12) and graph.input.rate_scale == 400.0
    assert graph.neuron is None and graph.synapse is None
    assert graph.layer("conv1").padding == (1, 1) and graph.layer("conv1").weight.dtype == np.float64
    assert all(l.threshold == 1.0 for l in graph.spiking_layers)


@pytest.mark.parametrize("arch, shape", [("cnn7", (1, 28, 28)), ("tiny", (1, 8, 8)),
                                         ("rueckauer-cifar", (3, 32, 32))])
def test_zoo_nets_match_torch(arch, shape, rng):
    torch.manual_seed(2)
    model = randomize_bn(build_model(arch, shape, 10))
    graph = from_torch(model, shape)
    x = rng.normal(0, 1, size=(3, *shape))
    np.testing.assert_allclose(graph.forward(x)[graph.layers[-1].name], torch_out(model, x, double=True),
                               rtol=1e-9, atol=1e-9)


def test_model_untouched_by_conversion(bn_model):
    before = {k: v.clone() for k, v in bn_model.state_dict().items()}
    bn_model.train()
    from_torch(bn_model, (2, 12, 12))
    assert bn_model.training and next(bn_model.parameters()).dtype == torch.float32
    for k, v in bn_model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_accepted_variants(rng):
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 4, 3, padding="same"), nn.ReLU(inplace=True)),
        nn.Conv2d(4, 4, 3, stride=2, padding=0), nn.Identity(), nn.ReLU(), nn.AvgPool2d(2, stride=1),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * 2 * 2, 3), nn.LogSoftmax(dim=1))
    graph = from_torch(model, (1, 7, 7))
    assert [l.name for l in graph.layers] == ["conv1", "conv2", "pool1", "flatten", "fc1"]
    assert graph.layer("conv2").stride == (2, 2) and graph.layer("pool1").stride == (1, 1)
    x = rng.uniform(0, 1, (2, 1, 7, 7))
    with torch.no_grad():
        logits = model[:-1].eval().double()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(graph.forward(x)["fc1"], logits, rtol=1e-10)


def test_mlp_without_conv(rng):
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    graph = from_torch(model, (6,))
    assert graph.input.shape == (6,) and [l.name for l in graph.layers] == ["fc1", "fc2"]


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


class SeqWithForward(nn.Sequential):
    def forward(self, x):
        return super().forward(x) * 2


def _conv_head(*middle, c=2):
    return nn.Sequential(nn.Conv2d(1, c, 3, padding=1), *middle)


@pytest.mark.parametrize("model, shape, match", [
    (_conv_head(nn.Sigmoid(), nn.Flatten(), nn.Linear(32, 2)), (1, 4, 4), "Sigmoid nonlinearity"),
    (_conv_head(nn.Tanh(), nn.Flatten(), nn.Linear(32, 2)), (1, 4, 4), "Tanh nonlinearity"),
    (_conv_head(nn.LeakyReLU(), nn.Flatten(), nn.Linear(32, 2)), (1, 4, 4), "LeakyReLU nonlinearity"),
    (_conv_head(nn.ReLU(), nn.Upsample(scale_factor=2), nn.Flatten(), nn.Linear(128, 2)), (1, 4, 4),
     r"unsupported layer '2' of type Upsample; supported: .*AvgPool2d.*Conv2d"),
    (SeqWithForward(nn.Linear(3, 2)), (3,), "SeqWithForward"),
    (nn.Sequential(nn.Linear(3, 3), nn.Sequential(Custom())), (3,), "Custom"),
    (_conv_head(nn.AvgPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)), (1, 4, 4), "without a ReLU"),
    (_conv_head(nn.ReLU(), nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)),
     (1, 4, 4), "without a ReLU"),
    (_conv_head(nn.ReLU(), nn.Flatten(), nn.Linear(32, 2), nn.ReLU()), (1, 4, 4), "followed by a ReLU"),
    (_conv_head(nn.ReLU(), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(32, 2)), (1, 4, 4), "can only be folded"),
    (nn.Sequential(nn.BatchNorm2d(1), nn.Conv2d(1, 2, 3)), (1, 4, 4), "can only be folded"),
    (_conv_head(nn.BatchNorm2d(2, track_running_stats=False), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2)),
     (1, 4, 4), "no running statistics"),
    (_conv_head(nn.ReLU(), nn.Linear(32, 2)), (1, 4, 4), "add nn.Flatten"),
    (_conv_head(nn.ReLU(), nn.Flatten(), nn.Linear(31, 2)), (1, 4, 4), "expects 31 inputs but gets 32"),
    (_conv_head(nn.ReLU(), nn.AvgPool2d(2, padding=1), nn.Flatten(), nn.Linear(18, 2)), (1, 4, 4), "padding=0"),
    (_conv_head(nn.ReLU(), nn.MaxPool2d(3, ceil_mode=True), nn.Flatten(), nn.Linear(8, 2)), (1, 4, 4), "ceil_mode"),
    (_conv_head(nn.ReLU(), nn.Softmax(dim=1), nn.Flatten(), nn.Linear(32, 2)), (1, 4, 4), "only supported as the last"),
    (_conv_head(nn.ReLU(), nn.AvgPool2d(2)), (1, 4, 4), "must end with a Conv2d or Linear"),
    (_conv_head(nn.ReLU(), nn.Flatten(start_dim=2), nn.Linear(16, 2)), (1, 4, 4), "start_dim=1"),
    (nn.Sequential(), (1, 4, 4), "no layers"),
    (_conv_head(nn.ReLU(), nn.Conv2d(2, 2, 2, padding="same"), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2)),
     (1, 4, 4), "even kernel"),
    (nn.Sequential(nn.Flatten(), nn.Conv2d(1, 2, 3)), (1, 4, 4), r"needs a \(C, H, W\) input"),
    (nn.Sequential(nn.Flatten(), nn.AvgPool2d(2), nn.Linear(8, 2)), (1, 4, 4), r"needs a \(C, H, W\) input"),
    (_conv_head(nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2)), (1, 4, 4), "has 3 features"),
    (_conv_head(nn.ReLU(), nn.AvgPool2d(2, divisor_override=3), nn.Flatten(), nn.Linear(8, 2)), (1, 4, 4),
     "divisor_override"),
])
def test_refusals(model, shape, match):
    with pytest.raises(ValueError, match=match):
        from_torch(model, shape)


@pytest.mark.parametrize("model, shape", [
    (Custom(), (1, 6, 6)),
    (nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)), (2, 4, 4)),
    (nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2), nn.ReLU(), nn.Flatten(), nn.Linear(2, 2)), (1, 5, 5)),
])
def test_formerly_refused_models_convert(model, shape):
    """A custom forward (traced with torch.fx), grouped and dilated convolutions now convert exactly."""
    graph = from_torch(model, shape)
    assert check(model, graph) < 1e-10


def test_not_a_module():
    with pytest.raises(ValueError, match="nn.Module"):
        from_torch("cnn7", (1, 28, 28))


def test_check_catches_a_wrong_graph(bn_model):
    graph = from_torch(bn_model, (2, 12, 12))
    torch.manual_seed(99)
    other = randomize_bn(build_model("12x12x2-6c3BN-p2-D0.2-8c3BN-mp2-16FCBN-D0.4-5FC", n_classes=5), seed=7)
    with pytest.raises(ValueError, match="differs from the torch model"):
        check(other, graph)
    assert check(bn_model, graph) < 1e-10


def test_converter_table_lists_core_types():
    for t in (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d, nn.AvgPool2d, nn.MaxPool2d, nn.Flatten,
              nn.ReLU, nn.Dropout, nn.Dropout2d):
        assert t in CONVERTERS


def test_graph_layers_are_ir(bn_model):
    graph = from_torch(bn_model, (2, 12, 12))
    assert isinstance(graph, ir.Graph) and all(isinstance(l, (ir.Conv2d, ir.Dense, ir.AvgPool2d, ir.MaxPool2d,
                                                              ir.Flatten)) for l in graph.layers)


def test_from_checkpoint(tmp_path, rng):
    from bioconv.ann import save_checkpoint
    from bioconv.from_torch import from_checkpoint

    torch.manual_seed(4)
    model = randomize_bn(build_model("8x8-4c3BN-p2-10FC", n_classes=10))
    meta = {"spec": "8x8-4c3BN-p2-10FC", "arch": "custom", "dataset": "digits", "input_shape": [1, 8, 8],
            "n_classes": 10, "test_accuracy": 0.5, "preprocessing": {"scale": "value/16"}}
    path = save_checkpoint(model, meta, tmp_path / "m.pt")
    graph = from_checkpoint(path, rate_scale=200.0)
    assert graph.input.rate_scale == 200.0 and graph.meta["dataset"] == "digits"
    assert graph.meta["ann_test_accuracy"] == 0.5 and graph.meta["bn_folded"] == ["conv1"]
    x = rng.uniform(0, 1, (2, 1, 8, 8))
    np.testing.assert_allclose(graph.forward(x)["fc1"], torch_out(model, x, double=True), rtol=1e-9, atol=1e-12)
