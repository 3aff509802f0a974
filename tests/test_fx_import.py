"""Foreign PyTorch models through torch.fx: exact ANN forward, conversion, and both engines spike-identical."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from brian2 import Hz, ms

from bioconv import ir
from bioconv.engines import brian2 as b2
from bioconv.engines import torch as te
from bioconv.from_torch import from_torch
from bioconv.fx_import import FUNCTIONS, METHODS, MODULES
from bioconv.graphio import load_graph, save_graph
from bioconv.normalize import activation_stats, max_norm
from bioconv.simulation import SimConfig
from foreign_models import FOREIGN, make

SHAPE = (1, 28, 28)


def _torch_out(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.double()(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_ann_forward_equals_torch(name, rng):
    model = make(name)
    graph = from_torch(model, SHAPE)
    x = rng.uniform(0, 1, (5, *SHAPE))
    got = graph.forward(x)[graph.layers[-1].name]
    if name == "functional":  # the final softmax is dropped: compare probabilities
        got = torch.softmax(torch.from_numpy(got), 1).numpy()
    np.testing.assert_allclose(got, _torch_out(model, x), atol=1e-5, rtol=0)
    assert graph.meta["source"] == "torch.fx"


def test_graph_shapes(rng):
    inception = from_torch(make("inception"), SHAPE)
    assert any(isinstance(l, ir.Concat) for l in inception.layers)
    resnet = from_torch(make("preact_resnet"), SHAPE)
    adds = [l for l in resnet.layers if isinstance(l, ir.Add)]
    assert len(adds) == 2 and all(len(a.inputs) == 2 for a in adds)
    dw = from_torch(make("depthwise"), SHAPE)
    groups = {l.name: (l.groups, l.dilation, l.padding_mode) for l in dw.layers if isinstance(l, ir.Conv2d)}
    assert groups["dw1"] == (8, (2, 2), "zeros") and groups["dw2"] == (16, (1, 1), "replicate")
    clips = {l.name: l.clip for l in from_torch(make("relu6"), SHAPE).layers if hasattr(l, "clip")}
    assert clips == {"features_0": 6.0, "features_3": 6.0, "fc1": 4.0, "fc2": None}


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_bcv_round_trip(name, tmp_path, rng):
    graph = from_torch(make(name), SHAPE)
    back = load_graph(save_graph(graph, tmp_path / "g.bcv"))
    x = rng.uniform(0, 1, (2, *SHAPE))
    np.testing.assert_array_equal(back.forward(x)[back.layers[-1].name], graph.forward(x)[graph.layers[-1].name])
    assert [type(l) for l in back.layers] == [type(l) for l in graph.layers]


def _converted(name: str, images: np.ndarray) -> ir.Graph:
    graph = from_torch(make(name), SHAPE)
    return max_norm(graph, activation_stats(graph, images), target_rate=300 * Hz)


@pytest.fixture(scope="module")
def mnist_images(mnist_dir):
    from bioconv.data import load_dataset

    ds = load_dataset("mnist", "test", data_dir=mnist_dir)
    return np.asarray(ds.images[:24], dtype=np.float64), np.asarray(ds.labels[:24])


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_engines_agree_on_foreign_models(name, mnist_images):
    """Converted with max-norm: torch event, the fused kernel (float64) and Brian2 runtime give the same counts
    (residual Add, Concat, grouped/dilated/replicate-padded convolutions, max-pools included)."""
    images, labels = mnist_images
    graph = _converted(name, images[:20])
    cfg = SimConfig(duration=25 * ms)
    x, y = images[20:22], labels[20:22]
    ev = te.simulate(graph, x, y, cfg, propagation="event", progress=False)
    fu = te.simulate(graph, x, y, cfg, propagation="fused", progress=False)
    br = b2.simulate(graph, x, y, cfg, device="runtime")
    assert sum(int(c.sum()) for c in ev.counts.values()) > 30
    for layer, counts in ev.counts.items():
        np.testing.assert_array_equal(counts, br.counts[layer], err_msg=f"{name}: layer {layer}")
        np.testing.assert_array_equal(fu.counts[layer], br.counts[layer], err_msg=f"{name} fused: layer {layer}")
    assert te.resolve_auto(graph, cfg, "cpu") == "fused"


def test_dense_path_matches_event_on_residual(mnist_images):
    images, labels = mnist_images
    graph = _converted("preact_resnet", images[:20])
    cfg = SimConfig(duration=25 * ms)
    ev = te.simulate(graph, images[20:23], labels[20:23], cfg, propagation="event", progress=False)
    de = te.simulate(graph, images[20:23], labels[20:23], cfg, propagation="dense", progress=False)
    for layer, counts in ev.counts.items():
        assert np.mean(counts == de.counts[layer]) >= 0.99, layer


def _mcr_converted(name: str, images: np.ndarray, labels: np.ndarray) -> ir.Graph:
    """Trained briefly (one epoch on 3000 MNIST training images, as a user's network would be: random
    weights can leave a layer unable to reach any rate target), then MCR-Norm at 200 Hz with the torch
    engine on 8 images × 40 ms as the probe."""
    from bioconv.ann.train import train
    from bioconv.data import load_dataset, subset
    from bioconv.normalize.mcr import mcr_norm
    from bioconv.normalize.probes import TorchProbe

    model = make(name)
    model.train()
    train(model, subset(load_dataset("mnist", "train"), 3000, seed=0), epochs=1, progress=False)
    graph = from_torch(model.eval(), SHAPE)
    probe = TorchProbe(images[:8], labels[:8], SimConfig(duration=40 * ms, bin=40 * ms))
    return mcr_norm(graph, activation_stats(graph, images), probe, target_rate=200 * Hz, input_rate=400 * Hz,
                    progress=False)


@pytest.mark.slow
@pytest.mark.standalone
@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_mcr_converted_cpp_standalone_agrees(name, mnist_images, tmp_path):
    """Every foreign model, converted with MCR-Norm: torch event and Brian2 cpp_standalone spike for spike."""
    images, labels = mnist_images
    graph = _mcr_converted(name, images[:20], labels[:20])
    assert graph.meta["normalization"]["method"] == "mcr"
    cfg = SimConfig(duration=25 * ms)
    x, y = images[20:22], labels[20:22]
    ev = te.simulate(graph, x, y, cfg, propagation="event", progress=False)
    cpp = b2.simulate(graph, x, y, cfg, device="cpp", build_dir=tmp_path / "build")
    for layer, counts in ev.counts.items():
        np.testing.assert_array_equal(counts, cpp.counts[layer], err_msg=f"{name}: layer {layer}")


# ----------------------------------------------------------------------------- refusals


class _Sigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 2, 3)
        self.f = nn.Linear(2 * 26 * 26, 3)

    def forward(self, x):
        return self.f(torch.sigmoid(self.c(x)).flatten(1))


class _NoRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 2, 3)
        self.c2 = nn.Conv2d(2, 2, 3)
        self.f = nn.Linear(2 * 24 * 24, 3)

    def forward(self, x):
        return self.f(F.relu(self.c2(self.c1(x))).flatten(1))


class _FinalRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Linear(784, 3)

    def forward(self, x):
        return F.relu(self.f(x.flatten(1)))


class _BnBeforeConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.c2 = nn.Conv2d(2, 2, 3)
        self.f = nn.Linear(2 * 24 * 24, 3)

    def forward(self, x):
        return self.f(F.relu(self.c2(self.bn(F.relu(self.c1(x))))).flatten(1))


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 2, 3)
        self.f = nn.Linear(2 * 26 * 26, 3)

    def forward(self, x):
        y = self.c(x)
        if y.sum() > 0:
            y = y * 2
        return self.f(y.relu().flatten(1))


class _AdaptiveUneven(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 2, 3)
        self.p = nn.AdaptiveAvgPool2d(4)
        self.f = nn.Linear(32, 3)

    def forward(self, x):
        return self.f(self.p(F.relu(self.c(x))).flatten(1))


@pytest.mark.parametrize("model, match", [
    (_Sigmoid(), r"node 'sigmoid' \(call_function sigmoid\).*no converter"),
    (_NoRelu(), r"node 'c2'.*Conv2d 'c2' gets a pre-activation.*put a ReLU before it"),
    (_FinalRelu(), "output is a rectified activation"),
    (_BnBeforeConv(), r"node 'c2'.*pre-activation"),
    (_Branchy(), "torch.fx cannot trace _Branchy"),
    (_AdaptiveUneven(), r"node 'p'.*AdaptiveAvgPool2d\(4, 4\) of a \(26, 26\) map is not a uniform average pool"),
])
def test_fx_refusals_name_the_node(model, match):
    with pytest.raises(ValueError, match=match):
        from_torch(model, SHAPE)


def test_dispatch_tables_cover_the_documented_ops():
    for t in (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.MaxPool2d,
              nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity, nn.Softmax):
        assert t in MODULES
    for f in (F.relu, torch.relu, torch.cat, torch.flatten, F.max_pool2d):
        assert f in FUNCTIONS
    assert {"relu", "view", "reshape", "flatten", "size", "add"} <= set(METHODS)


def test_graph_module_is_accepted(rng):
    model = make("functional")
    gm = torch.fx.symbolic_trace(model)
    graph = from_torch(gm, SHAPE)
    x = rng.uniform(0, 1, (2, *SHAPE))
    np.testing.assert_allclose(graph.forward(x)[graph.layers[-1].name], from_torch(model, SHAPE).forward(x)[
        graph.layers[-1].name])


def test_torchscript_is_refused():
    scripted = torch.jit.script(nn.Sequential(nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="TorchScript"):
        from_torch(scripted, (4,))


@pytest.mark.parametrize("where", ["top", "child"])
def test_hooks_are_refused(where):
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    target = model if where == "top" else model[0]
    target.register_forward_hook(lambda m, i, o: o * 2)
    with pytest.raises(ValueError, match="forward hooks"):
        from_torch(model, (4,))


def test_leading_relu_on_signed_input():
    model = nn.Sequential(nn.ReLU(), nn.Linear(4, 2))
    assert from_torch(model, (4,), input_range=(0.0, 1.0)).layers[0].name == "fc1"
    with pytest.raises(ValueError, match="ReLU to its raw input.*signed"):
        from_torch(model, (4,), input_range=(-1.0, 1.0))


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_pool_folding_keeps_the_function(name, rng):
    from bioconv.pool_folding import fold_avg_pools

    graph = from_torch(make(name), SHAPE)
    folded = fold_avg_pools(graph)
    x = rng.uniform(0, 1, (3, *SHAPE))
    np.testing.assert_allclose(folded.forward(x)[folded.layers[-1].name], graph.forward(x)[graph.layers[-1].name],
                               atol=1e-10)
    n_avg = sum(isinstance(l, ir.AvgPool2d) for l in graph.layers)
    assert sum(isinstance(l, ir.AvgPool2d) for l in folded.layers) == (1 if name == "inception" else 0) * n_avg


class _PoolBeforeRelu(nn.Module):
    """Average pools of conv outputs (folded into the convs), clamp as ReLU, view(-1, n)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 5, padding=2)
        self.c2 = nn.Conv2d(4, 6, 3, stride=2)
        self.f = nn.Linear(6 * 3 * 3, 3)

    def forward(self, x):
        x = F.relu(F.avg_pool2d(self.c1(x), 2))
        x = F.avg_pool2d(self.c2(x), 2).clamp(min=0)
        return self.f(x.view(-1, 6 * 3 * 3))


class _ResNetV1(nn.Module):
    """Post-activation residual block with an empty nn.Sequential shortcut and `out += x`; clamp(0, c)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.shortcut = nn.Sequential()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)), inplace=True)
        out = self.bn2(self.c2(F.relu(self.c1(x))))
        out += self.shortcut(x)
        out = torch.clamp(out, 0, 3.0)
        return self.fc(torch.mean(out, dim=(2, 3)))


@pytest.mark.parametrize("model", [_PoolBeforeRelu(), _ResNetV1()], ids=["pool-before-relu", "resnet-v1"])
def test_more_user_patterns(model, rng):
    from foreign_models import randomize_bn

    model = randomize_bn(model, 3)
    graph = from_torch(model, SHAPE)
    x = rng.uniform(0, 1, (3, *SHAPE))
    np.testing.assert_allclose(graph.forward(x)[graph.layers[-1].name], _torch_out(model, x), atol=1e-5, rtol=0)
