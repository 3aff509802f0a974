"""NIR bridge (bioconv.nirio): round trips, the parameter mapping, every unsupported feature's
error, and networks built, simulated and exported by snnTorch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from brian2 import ms, second

import nir  # the [nir] extra: nir, snntorch, nirtorch

from bioconv import ir  # noqa: E402
from bioconv.cli import main as cli_main  # noqa: E402
from bioconv.graphio import load_graph, save_graph  # noqa: E402
from bioconv.neurons import IF, LIF, SRM  # noqa: E402
from bioconv.nirio import ImportOptions, from_nir, read_nir, to_nir, write_nir  # noqa: E402
from bioconv.pool_folding import fold_avg_pools  # noqa: E402
from bioconv.simulation import SimConfig  # noqa: E402
from bioconv.synapses import Alpha, Delta, Exponential  # noqa: E402
from engine_helpers import random_graph, scale_to_spike  # noqa: E402


def assert_same_graph(a: ir.Graph, b: ir.Graph) -> None:
    """Field-by-field identity (arrays bit-exact, thresholds in the same form), models and metadata."""
    assert a.input == b.input or (a.input.shape, a.input.rate_scale, a.input.name) == (
        b.input.shape, b.input.rate_scale, b.input.name)
    assert [type(l) for l in a.layers] == [type(l) for l in b.layers]
    for la, lb in zip(a.layers, b.layers):
        for f in dataclasses.fields(la):
            va, vb = getattr(la, f.name), getattr(lb, f.name)
            assert np.shape(va) == np.shape(vb), (la.name, f.name)
            assert np.array_equal(np.asarray(va), np.asarray(vb)), (la.name, f.name)
        if ir.is_spiking(la):
            assert a.neuron_for(la.name) == b.neuron_for(lb.name)
    assert a.neuron == b.neuron and a.synapse == b.synapse and dict(a.layer_neurons) == dict(b.layer_neurons)
    assert dict(a.meta) == dict(b.meta)


def _via_file(graph: ir.Graph, tmp_path, **kw) -> ir.Graph:
    path = write_nir(graph, tmp_path / "net.nir", **kw)
    return from_nir(read_nir(path), ImportOptions(**kw))


def cnn7(neuron, seed: int = 0, images=None, target: float = 0.3) -> ir.Graph:
    """Random-weight cnn7 with folded pools (the default conversion), thresholds scaled on ``images``."""
    images = np.random.default_rng(seed).uniform(0, 1, (8, 1, 28, 28)) if images is None else images
    graph = scale_to_spike(fold_avg_pools(random_graph("cnn7", seed)), images, target=target)
    return graph.with_models(neuron=neuron, synapse=Delta(), method="max")


# ------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("neuron", [IF(), LIF(tau_m=20 * ms)], ids=["if", "lif"])
def test_round_trip_cnn7_is_identical(neuron, tmp_path):
    graph = cnn7(neuron)
    assert_same_graph(graph, _via_file(graph, tmp_path))


def test_round_trip_spiking_pools_thresholds_layer_neurons_and_cubalif(tmp_path, rng):
    graph = random_graph("4c3-p2-8c3-p2-10FC", seed=3)
    graph = graph.replace_layer("l0", threshold=rng.uniform(0.5, 2, 4))  # per channel
    graph = graph.replace_layer("l1", scale=1.7, threshold=2.5)  # scaled spiking pool
    graph = graph.replace_layer("l2", threshold=rng.uniform(0.5, 2, (8, 14, 14)))  # per neuron
    mixed = graph.with_models(neuron=IF(), synapse=Delta(), norm="test")
    mixed = dataclasses.replace(mixed, layer_neurons={"l4": LIF(tau_m=7 * ms), "l1": IF(tau=2 * ms)})
    assert_same_graph(mixed, _via_file(mixed, tmp_path))
    cuba = graph.with_models(neuron=LIF(tau_m=10 * ms), synapse=Exponential(tau_s=3 * ms))
    nodes = to_nir(cuba).nodes
    assert type(nodes["l0_neuron"]).__name__ == "CubaLIF"
    assert_same_graph(cuba, _via_file(cuba, tmp_path))


def test_export_follows_the_mapping_and_other_dt_round_trips(tmp_path, rng):
    graph = random_graph("tiny", seed=1)
    graph = graph.with_models(neuron=IF(), synapse=Delta())
    graph = dataclasses.replace(graph, layer_neurons={"l4": LIF(tau_m=20 * ms)})
    dt = 0.5 * ms
    g = to_nir(graph, dt=dt)
    conv, if_node = g.nodes["l0"], g.nodes["l0_neuron"]
    np.testing.assert_array_equal(conv.weight, graph.layer("l0").weight)
    np.testing.assert_allclose(conv.bias, graph.layer("l0").bias * 0.5)  # b = I_bias dt / tau_ref
    np.testing.assert_allclose(if_node.r, 1 / 0.5e-3)  # R = 1/dt: dv = R dt W = W
    lif = g.nodes["l4_neuron"]
    np.testing.assert_allclose(lif.tau, 20e-3)
    np.testing.assert_allclose(lif.r, 20e-3 / 0.5e-3)  # R = tau/dt
    assert g.nodes["input"].metadata["bioconv_rate_scale_hz"] == graph.input.rate_scale
    back = _via_file(graph, tmp_path, dt=dt)
    for la, lb in zip(graph.layers, back.layers):
        if hasattr(la, "weight"):
            np.testing.assert_allclose(lb.weight, la.weight, rtol=1e-12)
            np.testing.assert_allclose(lb.bias, la.bias, rtol=1e-12)


# ------------------------------------------------------------------------------- export errors
def _exportable():
    return random_graph("tiny", seed=2).with_models(neuron=IF(), synapse=Delta())


EXPORT_ERRORS = {
    "subtract": (lambda g: g.with_models(neuron=IF(reset="subtract")), "reset by subtraction"),
    "alpha": (lambda g: g.with_models(synapse=Alpha()), "no alpha synapse"),
    "srm": (lambda g: g.with_models(neuron=SRM()), "no SRM neuron"),
    "refractory": (lambda g: g.with_models(neuron=LIF(refractory=2 * ms)), "no refractory period"),
    "if_exponential": (lambda g: g.with_models(synapse=Exponential()), "no current-based IF"),
    "maxpool": (lambda g: dataclasses.replace(g, layers=tuple(
        ir.MaxPool2d(l.name, l.input_shape) if isinstance(l, ir.AvgPool2d) else l for l in g.layers)),
        "no gated max-pool"),
}


@pytest.mark.parametrize("case", sorted(EXPORT_ERRORS))
def test_export_error_names_layer_and_missing_nir_feature(case):
    make, feature = EXPORT_ERRORS[case]
    with pytest.raises(ValueError, match=rf"layer 'l\d'.*{feature}"):
        to_nir(make(_exportable()))


def test_rate_coding_travels_in_metadata(tmp_path):
    graph = dataclasses.replace(_exportable(), input=ir.Input((1, 28, 28), rate_scale=321.0))
    assert read_nir(write_nir(graph, tmp_path / "x.nir")).nodes["input"].metadata["bioconv_rate_scale_hz"] == 321.0
    assert from_nir(tmp_path / "x.nir").input.rate_scale == 321.0


# ------------------------------------------------------------------------------- import errors
def _lif(n, **kw):
    p = dict(tau=np.full(n, 0.01), r=np.full(n, 10.0), v_leak=np.zeros(n), v_threshold=np.ones(n))
    p.update(kw)
    return nir.LIF(**p)


def _chain(*nodes, n_in=4):
    return nir.NIRGraph.from_list(nir.Input(input_type=np.atleast_1d(n_in)), *nodes, type_check=False)


def _aff(n_out=3, n_in=4):
    return nir.Affine(weight=np.ones((n_out, n_in)), bias=np.zeros(n_out))


def _conv_graph(conv=None, pool=None, lif=None):
    conv = conv or nir.Conv2d(input_shape=(6, 6), weight=np.ones((2, 1, 3, 3)), stride=1, padding=0, dilation=1,
                              groups=1, bias=np.zeros(2))
    nodes = [nir.Input(input_type=np.array([1, 6, 6])), conv, lif or _lif((2, 4, 4))]
    if pool is not None:
        nodes += [pool, _lif((2, 2, 2))]
    return nir.NIRGraph.from_list(*nodes, type_check=False)


def _branching():
    g = _chain(_aff(), _lif(3))
    g.nodes["extra"] = _lif(3)
    g.edges.append(("affine", "extra"))
    return g


def _recurrent():
    g = _chain(_aff(3, 4), _lif(3))
    g.edges.append(("lif", "affine"))
    return g


def _nested():
    inner = _chain(_aff(3, 3), _lif(3), n_in=3)
    return nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([4])), "fc": _aff(), "rlif": inner,
                               "output": nir.Output(output_type=np.array([3]))},
                        edges=[("input", "fc"), ("fc", "rlif"), ("rlif", "output")], type_check=False)


IMPORT_ERRORS = {
    "LI": (lambda: _chain(_aff(), nir.LI(tau=np.ones(3), r=np.ones(3), v_leak=np.zeros(3))), r"'li'.*node type LI"),
    "CubaLI": (lambda: _chain(_aff(), nir.CubaLI(tau_syn=np.ones(3), tau_mem=np.ones(3), r=np.ones(3),
                                                 v_leak=np.zeros(3))), r"'cubali'.*node type CubaLI"),
    "I": (lambda: _chain(_aff(), nir.I(r=np.ones(3))), r"'i'.*node type I\b"),
    "Threshold": (lambda: _chain(_aff(), nir.Threshold(threshold=np.ones(3))), r"'threshold'.*node type Threshold"),
    "Delay": (lambda: _chain(_aff(), nir.Delay(delay=np.ones(3)), _lif(3)), r"'delay'.*node type Delay"),
    "Conv1d": (lambda: _chain(nir.Conv1d(input_shape=4, weight=np.ones((1, 1, 2)), stride=1, padding=0, dilation=1,
                                         groups=1, bias=np.zeros(1)), _lif((1, 3)), n_in=(1, 4)),
               r"'conv1d'.*node type Conv1d"),
    "nested": (_nested, r"'rlif'.*nested graph"),
    "branching": (_branching, r"'affine' has more than one outgoing edge"),
    "recurrent": (_recurrent, r"'lif' has more than one outgoing edge|recurrent"),
    "v_reset": (lambda: _chain(_aff(), _lif(3, v_reset=np.full(3, -0.5))), r"'lif'.*v_reset != 0"),
    "dilation": (lambda: _conv_graph(nir.Conv2d(input_shape=(6, 6), weight=np.ones((2, 1, 3, 3)), stride=1,
                                                padding=0, dilation=2, groups=1, bias=np.zeros(2))), r"'conv2d'.*dilation"),
    "groups": (lambda: nir.NIRGraph.from_list(nir.Input(input_type=np.array([2, 6, 6])), nir.Conv2d(
        input_shape=(6, 6), weight=np.ones((2, 1, 3, 3)), stride=1, padding=0, dilation=1, groups=2,
        bias=np.zeros(2)), _lif((2, 4, 4)), type_check=False), r"'conv2d'.*groups"),
    "same_even_kernel": (lambda: _conv_graph(nir.Conv2d(input_shape=(6, 6), weight=np.ones((2, 1, 2, 2)), stride=1,
                                                        padding="same", dilation=1, groups=1, bias=np.zeros(2))),
                         r"'conv2d'.*padding 'same' with an even kernel"),
    "r_varies_in_channel": (lambda: _conv_graph(lif=_lif((2, 4, 4), r=np.arange(32.0).reshape(2, 4, 4))),
                            r"'lif'.*varies within a conv channel"),
    "padded_pool": (lambda: _conv_graph(pool=nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                                          padding=np.array([1, 1]))), r"'avgpool2d'.*padded pools"),
    "tau_varies": (lambda: _chain(_aff(), _lif(3, tau=np.array([0.01, 0.02, 0.01]))), r"'lif'.*tau varies"),
    "partial_flatten": (lambda: nir.NIRGraph.from_list(nir.Input(input_type=np.array([2, 3, 4])), nir.Flatten(
        input_type={"input": np.array([2, 3, 4])}, start_dim=1), _aff(3, 12), _lif(3), type_check=False),
        r"'flatten' \(Flatten\) keeps 2 dimensions"),
    "trailing": (lambda: _chain(_aff(), _lif(3), _aff(2, 3)), r"'affine_1'.*follow the last neuron node"),
    "two_weights": (lambda: _chain(_aff(4, 4), _aff(), _lif(3)), r"'affine' \(Affine\) → 'affine_1'.*one conv"),
    "mixed_synapses": (lambda: _chain(_aff(), _lif(3), _aff(2, 3), nir.CubaLIF(
        tau_syn=np.full(2, 0.005), tau_mem=np.full(2, 0.01), r=np.ones(2), v_leak=np.zeros(2),
        v_threshold=np.ones(2))), r"different synapses"),
}


@pytest.mark.parametrize("case", sorted(IMPORT_ERRORS))
def test_import_error_names_unsupported_node(case):
    make, pattern = IMPORT_ERRORS[case]
    with pytest.raises(ValueError, match=pattern):
        from_nir(make())


def test_import_sumpool_scale_and_same_padding_follow_the_mapping():
    w = np.random.default_rng(0).normal(size=(2, 1, 3, 3))
    conv = nir.Conv2d(input_shape=(6, 6), weight=w, stride=1, padding="same", dilation=1, groups=1,
                      bias=np.array([0.1, -0.2]))
    scale = nir.Scale(scale=np.broadcast_to(np.array([2.0, 3.0])[:, None, None], (2, 6, 6)).copy())
    pool = nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    lif = _lif((2, 6, 6), r=np.full((2, 6, 6), 4.0))
    g = nir.NIRGraph.from_list(nir.Input(input_type=np.array([1, 6, 6])), conv, scale, lif, pool,
                               nir.Scale(scale=np.full((2, 3, 3), 0.5)), nir.IF(r=np.full((2, 3, 3), 1e3),
                                                                             v_threshold=np.full((2, 3, 3), 2.0)))
    out = from_nir(g, ImportOptions(dt=1 * ms))
    c, p = out.spiking_layers
    assert c.padding == (1, 1) and p.kernel_size == (2, 2)
    gain = 4.0 * 1e-3 / 0.01  # LIF: w = R dt W / tau
    np.testing.assert_allclose(c.weight, w * np.array([2.0, 3.0])[:, None, None, None] * gain)
    np.testing.assert_allclose(c.bias, np.array([0.2, -0.6]) * 4.0 * 1e-3 / 0.01)  # I_bias = tau_ref R b / tau
    assert p.scale == pytest.approx(4 * 0.5)  # SumPool = AvgPool with scale k_y k_x; IF gain R dt = 1
    assert p.threshold == 2.0 and out.neuron_for(p.name) == IF()


def test_cli_export_import_and_errors(tmp_path, capsys):
    graph = cnn7(LIF(tau_m=20 * ms))
    save_graph(graph, tmp_path / "net.bcv")
    assert cli_main(["export", str(tmp_path / "net.bcv"), "--to", "nir", str(tmp_path / "net.nir")]) == 0
    assert cli_main(["import", str(tmp_path / "net.nir"), "--out", str(tmp_path / "back.bcv")]) == 0
    assert_same_graph(graph, load_graph(tmp_path / "back.bcv"))
    assert cli_main(["import", str(tmp_path / "missing.nir"), "--out", str(tmp_path / "x.bcv")]) == 2
    assert cli_main(["export", str(tmp_path / "net.bcv"), "--to", "onnx", str(tmp_path / "x")]) == 2
    save_graph(graph.with_models(neuron=IF(reset="subtract")), tmp_path / "sub.bcv")
    assert cli_main(["export", str(tmp_path / "sub.bcv"), str(tmp_path / "sub.nir")]) == 2
    err = capsys.readouterr().err
    assert "no NIR file" in err and "unknown export format 'onnx'" in err and "reset by subtraction" in err


# ----------------------------------------------------------------------------------- snnTorch
import nir_fixtures as fx  # noqa: E402

SNN_DT = fx.SNNTORCH_DT_S * second


@pytest.fixture(scope="module")
def mnist_small(mnist_dir):
    from bioconv.data import load_dataset

    ds = load_dataset("mnist", "test", mnist_dir)
    return ds.images[:2], ds.labels[:2]


def _import_snntorch(kind: str, tmp_path, **kw) -> ir.Graph:
    nir.write(tmp_path / f"{kind}.nir", fx.export(fx.build_net(kind)))
    return from_nir(tmp_path / f"{kind}.nir", ImportOptions(dt=SNN_DT, **kw))


def _trains(graph, images, steps):
    from bioconv import encoding

    rates, signs = encoding.input_rates_hz(images, graph.input)
    return encoding.spike_trains(rates, signs, fx.SNNTORCH_DT_S, steps, "bernoulli", 0, 0)


@pytest.mark.parametrize("kind,discretization", [("lif_zero", "euler"), ("cuba", "continuous")])
def test_snntorch_models_round_trip_through_nir(kind, discretization, tmp_path):
    graph = _import_snntorch(kind, tmp_path, discretization=discretization)
    assert_same_graph(graph, _via_file(graph, tmp_path, dt=SNN_DT))


def test_snntorch_subtract_model_cannot_be_exported_back(tmp_path):
    graph = _import_snntorch("if_subtract", tmp_path, reset="subtract")
    with pytest.raises(ValueError, match="layer 'nir_0': NIR has no reset by subtraction"):
        to_nir(graph, dt=SNN_DT)


def test_snntorch_if_subtract_is_spike_exact_in_both_engines(tmp_path, mnist_small):
    from bioconv.engines import simulate

    images, labels = mnist_small
    graph = _import_snntorch("if_subtract", tmp_path, reset="subtract")
    assert graph.neuron == IF(reset="subtract") and graph.synapse == Delta()
    steps = 30
    reference = fx.shifted_counts(fx.simulate(fx.build_net("if_subtract"), _trains(graph, images, steps)), steps)
    cfg = SimConfig(duration=steps * SNN_DT, dt=SNN_DT, bin=steps * SNN_DT)
    for engine, opts in (("torch", {}), ("brian2", {"device": "runtime"})):
        result = simulate(graph, images, labels, cfg, engine=engine, **opts)
        for layer, ref in zip(graph.spiking_layers, reference):
            assert ref.sum() > 0
            np.testing.assert_array_equal(result.counts[layer.name], ref, err_msg=f"{engine} {layer.name}")


def test_snntorch_lif_euler_keeps_the_step_decay_and_engines_agree(tmp_path, mnist_small):
    from bioconv.engines import simulate

    images, labels = mnist_small
    graph = _import_snntorch("lif_zero", tmp_path, discretization="euler")
    tau_m = float(graph.neuron.tau_m / second)
    assert np.exp(-fx.SNNTORCH_DT_S / tau_m) == pytest.approx(0.9, rel=1e-6)  # snnTorch's beta (float32)
    np.testing.assert_allclose(graph.spiking_layers[0].weight,  # w = W/beta: the input arrives before the decay
                               fx.build_net("lif_zero")[0].weight.detach().numpy() / 0.9, rtol=1e-6)
    steps = 50
    cfg = SimConfig(duration=steps * SNN_DT, dt=SNN_DT, bin=steps * SNN_DT)
    a = simulate(graph, images, labels, cfg, engine="torch")
    b = simulate(graph, images, labels, cfg, engine="brian2", device="runtime")
    for layer in graph.spiking_layers:
        assert a.counts[layer.name].sum() > 0
        np.testing.assert_array_equal(a.counts[layer.name], b.counts[layer.name])


def test_snntorch_cubalif_imports_with_exponential_synapse_and_engines_agree(tmp_path, mnist_small):
    from bioconv.engines import simulate

    images, labels = mnist_small
    net = fx.build_net("cuba")
    graph = _import_snntorch("cuba", tmp_path)
    dt = fx.SNNTORCH_DT_S
    tau_syn, tau_mem = dt / (1 - np.float32(0.8)), dt / (1 - np.float32(0.9))  # what snnTorch writes
    assert isinstance(graph.synapse, Exponential)
    assert float(graph.synapse.tau_s / second) == pytest.approx(float(tau_syn), rel=1e-12)
    assert float(graph.neuron.tau_m / second) == pytest.approx(float(tau_mem), rel=1e-12)
    first = graph.spiking_layers[0]  # w = R w_in dt W / tau_mem with R = tau_mem/dt, w_in = tau_syn/dt
    np.testing.assert_allclose(first.weight, net[0].weight.detach().numpy() * float(tau_syn / dt), rtol=1e-6)
    steps = 30
    cfg = SimConfig(duration=steps * SNN_DT, dt=SNN_DT, bin=steps * SNN_DT)
    result = simulate(graph, images, labels, cfg, engine="brian2", device="runtime")
    assert all(result.counts[l.name].sum() > 0 for l in graph.spiking_layers)
    mirror = simulate(graph, images, labels, cfg, engine="torch", dtype="float64")
    for layer in graph.spiking_layers:  # the exponential synapse through the models layer: the same spikes
        np.testing.assert_array_equal(mirror.counts[layer.name], result.counts[layer.name])


# ---------------------------------------------------------------------------- cpp_standalone
@pytest.mark.standalone
@pytest.mark.parametrize("neuron", [IF(), LIF(tau_m=20 * ms)], ids=["if", "lif"])
def test_cnn7_round_trip_gives_identical_counts_in_cpp_standalone(neuron, tmp_path, mnist_small):
    from bioconv.engines.brian2 import Simulator

    images, labels = mnist_small
    graph = cnn7(neuron, images=images, target=1.0)  # every layer spikes in 30 ms, also with the LIF leak
    back = _via_file(graph, tmp_path)
    cfg = SimConfig(duration=30 * ms, dt=1 * ms, bin=30 * ms)
    sim = Simulator(graph, cfg, device="cpp", batch_size=len(images))
    a, b = sim.run(images, labels), sim.run(images, labels, graph=back)
    for layer in graph.spiking_layers:
        assert a.counts[layer.name].sum() > 0
        np.testing.assert_array_equal(a.counts[layer.name], b.counts[layer.name])


# ---------------------------------------------------------------------------- foreign models
#: foreign models (tests/foreign_models.py): those NIR can express round-trip; the others name what NIR lacks
FOREIGN_NIR = ("functional", "relu6", "lenet5", "preact_resnet", "inception", "depthwise")


@pytest.mark.parametrize("name", FOREIGN_NIR)
def test_foreign_models_round_trip_or_name_the_missing_feature(name, tmp_path):
    import foreign_models

    from bioconv.from_torch import from_torch
    from bioconv.pool_folding import prepare_pools

    if name not in foreign_models.FOREIGN:
        pytest.fail(f"foreign model {name!r} missing from tests/foreign_models.py: {sorted(foreign_models.FOREIGN)}")
    model = foreign_models.make(name)
    graph = prepare_pools(from_torch(model, (1, 28, 28)), "fold").with_models(neuron=IF(), synapse=Delta())
    expressible = graph.is_sequential and not any(
        isinstance(l, ir.MaxPool2d) or (isinstance(l, ir.Conv2d) and (l.groups != 1 or tuple(l.dilation) != (1, 1)))
        for l in graph.layers)
    if expressible:  # a chain: explicit "previous layer" inputs are the default () of the file's chain
        chain = dataclasses.replace(graph, layers=tuple(dataclasses.replace(l, inputs=()) for l in graph.layers))
        assert_same_graph(chain, _via_file(graph, tmp_path))
    else:
        with pytest.raises(ValueError, match=r"layer '.*': .*(max-pool|several inputs|grouped, dilated)"):
            to_nir(graph)
