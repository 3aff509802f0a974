"""Normalization: statistics, max/robust norm, MCR-Norm scan, Spike-Norm, threshold balancing, MPBN, convert CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from brian2 import Hz, ms

from bioconv import ir
from bioconv.cli import main as cli_main
from bioconv.engines.torch import simulate as torch_simulate
from bioconv.neurons import IF, LIF
from bioconv.normalize import (
    activation_stats,
    fold_mpbn,
    max_norm,
    mcr_norm,
    mpbn_threshold,
    predicted_rates_hz,
    robust_norm,
    scan_gain,
    spike_norm,
    threshold_form,
    weight_form,
)
from bioconv.normalize.probes import TorchProbe
from bioconv.normalize.spike_norm import max_step_current
from bioconv.normalize.thresholds import mpbn_fires
from bioconv.simulation import SimConfig
from bioconv.synapses import Delta

torch.set_num_threads(1)


def small_graph(seed: int = 0) -> ir.Graph:
    """conv(1->4, 3x3 same) - avgpool 2 - flatten - dense 64->32 - dense 32->5, random weights, biases."""
    rng = np.random.default_rng(seed)
    conv = ir.Conv2d("conv", (1, 8, 8), rng.normal(0.1, 0.5, (4, 1, 3, 3)), rng.normal(0.05, 0.1, 4), padding=1)
    pool = ir.AvgPool2d("pool", (4, 8, 8), 2, 2)
    flat = ir.Flatten("flat", (4, 4, 4))
    fc1 = ir.Dense("fc1", rng.normal(0.02, 0.2, (32, 64)), rng.normal(0.05, 0.1, 32))
    fc2 = ir.Dense("fc2", rng.normal(0.0, 0.3, (5, 32)), rng.normal(0.0, 0.1, 5))
    return ir.Graph(ir.Input((1, 8, 8)), (conv, pool, flat, fc1, fc2))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    images = rng.uniform(0, 1, (24, 1, 8, 8))
    graph = small_graph()
    labels = np.argmax(graph.forward(images)["fc2"], axis=1)
    return graph, images, labels


def test_stats_max_and_percentiles(data):
    graph, images, _ = data
    st = activation_stats(graph, images, percentiles=(50.0, 99.9), per_channel=True, batch_size=7)
    acts = graph.forward(images)
    for name in ("conv", "pool", "fc1", "fc2"):
        a = acts[name]
        assert st.layer_max[name] == pytest.approx(a.max())
        assert st.percentiles[name][50.0] == pytest.approx(np.percentile(a[a > 0], 50.0))
    assert st.channel_max["conv"] == pytest.approx(acts["conv"].max(axis=(0, 2, 3)))
    assert st.input_max == pytest.approx(images.max())
    with pytest.raises(ValueError, match="percentile 12.0"):
        st.scale("conv", 12.0)


def test_max_norm_maps_max_activation_to_one(data):
    graph, images, _ = data
    st = activation_stats(graph, images)
    g = max_norm(graph, st, target_rate=1000 * Hz)
    rates = predicted_rates_hz(g, images)
    for layer in ("conv", "pool", "fc1", "fc2"):  # max activation per layer -> 1 (= 1000 Hz · 1 ms)
        assert rates[layer].max() * 1e-3 == pytest.approx(1.0)
    norm = g.meta["normalization"]
    assert norm["method"] == "max" and norm["lambda"]["fc1"] == pytest.approx(st.layer_max["fc1"])
    # seed 004 §2.2.2: w * λ_{n-1}/λ_n, b/λ_n
    lam = st.layer_max
    assert g.layer("fc1").weight == pytest.approx(graph.layer("fc1").weight * lam["pool"] / lam["fc1"])
    assert g.layer("fc1").bias == pytest.approx(graph.layer("fc1").bias / lam["fc1"])
    assert g.input.rate_scale == pytest.approx(1000.0 / images.max())
    assert isinstance(g.neuron, IF) and g.neuron.reset == "zero" and isinstance(g.synapse, Delta)


def test_robust_norm_uses_percentile(data):
    graph, images, _ = data
    st = activation_stats(graph, images, percentiles=(90.0,))
    g = robust_norm(graph, st, percentile=90.0, target_rate=200 * Hz, input_rate=400 * Hz)
    rates = predicted_rates_hz(g, images)
    acts = graph.forward(images)
    # the first layer sees the exact input scaling: its 90th percentile of positive rates is the target
    pos = rates["conv"][rates["conv"] > 0]
    assert np.percentile(pos, 90.0) == pytest.approx(200.0)
    assert g.meta["normalization"]["lambda"]["conv"] == pytest.approx(np.percentile(acts["conv"][acts["conv"] > 0], 90))
    assert g.meta["normalization"]["percentile"] == 90.0
    assert g.input.rate_scale == pytest.approx(400.0 / images.max())


def test_bad_rates_raise(data):
    graph, images, _ = data
    st = activation_stats(graph, images)
    with pytest.raises(ValueError, match="above 1/dt"):
        max_norm(graph, st, target_rate=2000 * Hz)
    with pytest.raises(ValueError, match="Brian2 rate"):
        max_norm(graph, st, target_rate=200.0)
    with pytest.raises(ValueError, match="already normalized"):
        max_norm(max_norm(graph, st), st)


def test_scan_gain_brackets_and_bisects():
    f = lambda g: 37.0 * g**0.7 + 3.0  # noqa: E731 - monotone, nonlinear
    g, value, history, ok = scan_gain(f, 200.0, tolerance=0.02)
    assert ok and abs(value / 200 - 1) <= 0.02 and len(history) < 10
    step = lambda g: 10.0 * np.floor(g)  # noqa: E731 - jumps over the window
    _, _, _, ok = scan_gain(step, 205.0, tolerance=0.01)
    assert not ok
    with pytest.raises(ValueError, match="silent or saturated"):
        scan_gain(lambda g: 0.0, 200.0)


@pytest.fixture(scope="module")
def mcr_graph(data):
    graph, images, labels = data
    st = activation_stats(graph, images)
    probe = TorchProbe(images, labels, SimConfig(duration=300 * ms, seed=3))
    return mcr_norm(graph, st, probe, target_rate=200 * Hz, input_rate=400 * Hz, progress=False), probe


def test_mcr_hits_target_rate_with_torch_probe(mcr_graph, data):
    g, probe = mcr_graph
    norm = g.meta["normalization"]
    assert norm["method"] == "mcr"
    full = torch_simulate(g, probe.images, probe.labels, probe.config, progress=False)
    for layer in ("conv", "fc1", "fc2"):
        measured = full.rates_hz(layer).max()
        assert abs(measured / 200.0 - 1) <= 0.02, (layer, measured)
        assert norm["achieved_max_rate_hz"][layer] == pytest.approx(measured)
        assert norm["scan"][layer]["converged"] and norm["gain"][layer] > 1.0  # degeneration compensated
    # IF pools: scanned over k input spikes per output spike; never more than window count / k
    assert norm["scan"]["pool"]["mode"] == "count"
    k = int(round(4 * (1 + 1e-6) / norm["scale"]["pool"]["weight"]))
    window = full.counts["conv"].reshape(-1, 4, 4, 2, 4, 2).sum(axis=(3, 5)).reshape(len(probe.images), -1)
    assert np.all(full.counts["pool"] <= window // k)
    assert norm["achieved_max_rate_hz"]["pool"] == pytest.approx(full.rates_hz("pool").max())
    # weight/bias ratio is λ_{n-1}/ρ_{n-1} (seed 000 eq. 4-5)
    sc = norm["scale"]["fc1"]
    assert sc["weight"] / sc["bias"] == pytest.approx(norm["lambda"]["pool"] / 0.2)


def test_mcr_options(data):
    graph, images, labels = data
    st = activation_stats(graph, images)
    probe = TorchProbe(images, labels, SimConfig(duration=200 * ms, seed=1))
    g = mcr_norm(graph, st, probe, target_rate=150 * Hz, input_rate=300 * Hz, statistic="percentile",
                 rate_percentile=99.0, rho_from_slope=True, eta_factors=(0.9, 1.0), calib_images=images,
                 calib_labels=labels, layer_targets={"fc2": 100 * Hz}, progress=False)
    norm = g.meta["normalization"]
    assert norm["target_rate_hz"]["fc2"] == pytest.approx(100.0)
    assert set(norm["rho_measured"]) == {"conv", "pool", "fc1"}  # not the output layer, which feeds none
    assert set(norm["eta_search"]) == {"0.9", "1.0"}
    for layer in ("conv", "fc1"):  # the percentile statistic hit its target during the scan
        scan = norm["scan"][layer]
        assert scan["converged"] and abs(scan["achieved_stat_hz"] / 150 - 1) <= 0.02
    with pytest.raises(ValueError, match="too coarse"):
        mcr_norm(graph, st, TorchProbe(images, labels, SimConfig(duration=22 * ms)), progress=False)


def test_mcr_measures_rates_for_other_models(data):
    """LIF neurons with alpha synapses: the same scan, no IF-specific assumption (pools scanned too)."""
    from bioconv.synapses import Alpha

    graph, images, labels = data
    st = activation_stats(graph, images)
    probe = TorchProbe(images[:8], labels[:8], SimConfig(duration=150 * ms, seed=4))
    g = mcr_norm(graph, st, probe, neuron=LIF(tau_m=10 * ms), synapse=Alpha(tau_s=2 * ms), progress=False)
    norm = g.meta["normalization"]
    assert norm["neuron"]["kind"] == "lif" and norm["synapse"]["kind"] == "alpha"
    assert norm["scan"]["pool"]["mode"] == "scan"
    full = torch_simulate(g, probe.images, probe.labels, probe.config, progress=False)
    for layer in ("conv", "fc1"):
        assert abs(full.rates_hz(layer).max() / 200.0 - 1) <= 0.02


@pytest.mark.parametrize("neuron", [IF(reset="zero"), IF(reset="subtract"), LIF(tau_m=5 * ms, reset="zero")])
def test_threshold_balancing_equals_weight_scaling(mcr_graph, neuron):
    g, probe = mcr_graph
    g = g.with_models(neuron=neuron)
    th = threshold_form(g)
    assert all(not np.all(np.asarray(l.threshold) == 1.0) for l in th.spiking_layers)
    # threshold form keeps the ANN biases (seed 001 Theorem 1, threshold balancing)
    assert th.layer("fc1").bias == pytest.approx(small_graph().layer("fc1").bias)
    a = torch_simulate(g, probe.images, probe.labels, probe.config, progress=False)
    b = torch_simulate(th, probe.images, probe.labels, probe.config, progress=False)
    for layer in a.counts:
        np.testing.assert_array_equal(a.counts[layer], b.counts[layer])
    back = weight_form(th)
    for l0, l1 in zip(g.spiking_layers, back.spiking_layers):
        if isinstance(l0, ir.Dense):
            np.testing.assert_allclose(l1.weight, l0.weight, rtol=1e-12)
            np.testing.assert_allclose(l1.bias, l0.bias, rtol=1e-12, atol=1e-15)


def test_mpbn_folding_preserves_firing(data):
    graph, images, _ = data
    rng = np.random.default_rng(3)
    c = 32
    gamma, beta = rng.uniform(0.5, 2.0, c), rng.normal(0, 0.2, c)
    mean, var = rng.normal(0, 0.1, c), rng.uniform(0.5, 2.0, c)
    u = rng.normal(0.5, 1.0, (1000, c))
    folded = mpbn_threshold(1.0, gamma, beta, mean, var, eps=1e-5)
    np.testing.assert_array_equal(mpbn_fires(u, 1.0, gamma, beta, mean, var, 1e-5), u > folded)
    # a spiking net with MPBN on fc1 (reference loop, Brian2's step order) == folded thresholds in the engine
    st = activation_stats(graph, images)
    g = max_norm(graph, st, target_rate=500 * Hz)
    fc1 = g.layer("fc1")
    mean = np.zeros(c)  # keep folded thresholds positive
    gf = fold_mpbn(g, "fc1", gamma, beta, mean, var)
    assert np.asarray(gf.layer("fc1").threshold).shape == (c,)
    cfg = SimConfig(duration=50 * ms, seed=2, record_times=("pool",))
    res = torch_simulate(gf, images[:4], np.zeros(4, int), cfg, progress=False)
    img, nrn, t = res.spike_times["pool"]
    for k in range(4):
        s = np.zeros((cfg.n_steps, 64))
        sel = img == k
        s[np.rint(t[sel]).astype(int), nrn[sel]] = 1
        v, count = np.zeros(c), np.zeros(c, int)
        for step in range(cfg.n_steps):
            v = v + fc1.bias  # dt = tau
            fire = mpbn_fires(v[None], 1.0, gamma, beta, mean, var, 1e-5)[0]
            v = v + fc1.weight @ s[step]
            v[fire] = 0.0
            count += fire
        np.testing.assert_array_equal(res.counts["fc1"][k], count)
    with pytest.raises(ValueError, match="gamma > 0"):
        fold_mpbn(g, "fc1", -gamma, beta, mean, var)
    with pytest.raises(ValueError, match="<= 0"):
        fold_mpbn(g, "fc1", gamma, beta + 5.0, mean, var)


def test_spike_norm_sets_max_input_to_threshold(data):
    graph, images, labels = data
    st = activation_stats(graph, images)
    probe = TorchProbe(images[:8], labels[:8], SimConfig(duration=60 * ms, seed=0))
    g = spike_norm(graph, st, probe, input_rate=1000 * Hz, progress=False)
    norm = g.meta["normalization"]
    assert norm["method"] == "spike" and set(norm["spike_threshold"]) == {"conv", "pool", "fc1", "fc2"}
    # after normalization the largest one-step input of layer 1 is exactly the threshold 1
    raster = probe.spikes(g, g.input.name)
    assert max_step_current(g.layer("conv"), raster, 1.0) == pytest.approx(1.0)
    raster = probe.spikes(g, "conv")
    assert max_step_current(g.layer("pool"), raster, 1.0) == pytest.approx(1.0)
    th = threshold_form(g)  # the original's form: ANN bias kept, θ = max input
    assert th.layer("conv").threshold == pytest.approx(norm["spike_threshold"]["conv"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--norm", "foo"], "unknown normalization method 'foo'"),
        (["--target-rate", "0Hz"], "must be > 0 Hz"),
        (["--target-rate=-5Hz"], "must be > 0 Hz"),
        (["--target-rate", "2000Hz"], "above 1/dt"),
        (["--input-rate", "600Hz", "--dt", "2ms"], "above 1/dt"),
        (["--calib", "0"], "--calib must be >= 1"),
        (["--neuron", "srm", "--synapse", "alpha"], "use synapse='delta' with SRM"),
    ],
)
def test_convert_cli_errors(argv, message, capsys, tmp_path):
    rc = cli_main(["convert", str(tmp_path / "missing.pt"), *argv])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_convert_cli_missing_checkpoint(capsys, tmp_path):
    assert cli_main(["convert", str(tmp_path / "missing.pt"), "--norm", "max"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("device", [pytest.param("runtime"), pytest.param("cpp", marks=pytest.mark.standalone)])
def test_brian2_and_torch_probes_give_the_same_conversion(data, device, tmp_path):
    """Same calibration seed -> identical gains, scan histories and achieved rates with either engine."""
    from bioconv.normalize.probes import Brian2Probe

    graph, images, labels = data
    st = activation_stats(graph, images)
    cfg = SimConfig(duration=100 * ms, seed=5)
    kw = dict(target_rate=200 * Hz, input_rate=400 * Hz, progress=False)
    g_t = mcr_norm(graph, st, TorchProbe(images[:6], labels[:6], cfg), **kw)
    opts = {"build_dir": str(tmp_path / "b2")} if device == "cpp" else {}
    g_b = mcr_norm(graph, st, Brian2Probe(images[:6], labels[:6], cfg, device=device, **opts), **kw)
    nt, nb = g_t.meta["normalization"], g_b.meta["normalization"]
    assert nt["gain"] == nb["gain"]
    assert nt["achieved_max_rate_hz"] == nb["achieved_max_rate_hz"]
    assert nt["scan"] == nb["scan"]
    for lt, lb in zip(g_t.spiking_layers, g_b.spiking_layers):
        if isinstance(lt, ir.Dense):
            np.testing.assert_array_equal(lt.weight, lb.weight)


def test_convert_cli_writes_normalized_graph(tmp_path, capsys, mnist_dir):
    from bioconv.ann import build_model, save_checkpoint
    from bioconv.graphio import load_graph

    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("tiny", (1, 28, 28), 10), {
        "spec": "4c3-p2-8c3-p2-10FC", "arch": "tiny", "dataset": "mnist", "input_shape": [1, 28, 28],
        "n_classes": 10, "seed": 0, "test_accuracy": 0.1}, tmp_path / "tiny.pt")
    out = tmp_path / "robust.bcv"
    assert cli_main(["convert", str(ckpt), "--norm", "robust", "--percentile", "99", "--calib", "20",
                     "--neuron", "lif", "--reset", "subtract", "--form", "thresholds", "--out", str(out)]) == 0
    g = load_graph(out)
    norm = g.meta["normalization"]
    assert norm["method"] == "robust" and norm["percentile"] == 99.0 and norm["form"] == "thresholds"
    assert norm["calibration"]["n"] == 20 and norm["neuron"]["kind"] == "lif" and g.neuron.reset == "subtract"
    assert "lambda" in capsys.readouterr().out
    assert [l.name for l in g.spiking_layers] == ["conv1", "conv2", "fc1"] and g.meta["folded_pools"] == ["pool1", "pool2"]
    out = tmp_path / "spike.bcv"
    assert cli_main(["convert", str(ckpt), "--norm", "spike", "--calib", "20", "--calib-sim", "2",
                     "--duration", "30ms", "--pools", "spiking", "--out", str(out)]) == 0
    norm = load_graph(out).meta["normalization"]
    assert norm["method"] == "spike" and norm["calibration"]["n_simulated"] == 2
    assert set(norm["achieved_max_rate_hz"]) == {"conv1", "pool1", "conv2", "pool2", "fc1"}
