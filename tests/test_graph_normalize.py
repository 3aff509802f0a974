"""Normalization of graphs with several inputs per layer: each source scaled with its own λ/ρ."""

from __future__ import annotations

import numpy as np
import pytest
from brian2 import Hz, ms

from bioconv import ir
from bioconv.engines import torch as te
from bioconv.normalize import activation_stats, max_norm, mcr_norm, spike_norm
from bioconv.normalize.probes import make_probe
from bioconv.normalize.scaling import predicted_rates_hz
from bioconv.normalize.thresholds import threshold_form, weight_form
from bioconv.simulation import SimConfig


def _dag(rng) -> ir.Graph:
    """conv a, conv b (very different scales) -> Concat -> conv c; residual Add(c, a) -> dense."""
    a = ir.Conv2d("a", (1, 6, 6), rng.normal(0.5, 0.3, (2, 1, 3, 3)), np.full(2, 0.1), padding=1)
    b = ir.Conv2d("b", (1, 6, 6), 8.0 * rng.normal(0.5, 0.3, (3, 1, 3, 3)), np.full(3, 0.2), padding=1,
                  inputs=("input",))
    cat = ir.Concat("cat", ((2, 6, 6), (3, 6, 6)), ("a", "b"))
    c = ir.Conv2d("c", (5, 6, 6), rng.normal(0.1, 0.3, (2, 5, 3, 3)), np.zeros(2), padding=1)
    br = ir.Conv2d("res_c", (2, 6, 6), rng.normal(0.1, 0.3, (2, 2, 3, 3)), np.full(2, 0.05), padding=1,
                   spiking=False)
    skip = ir.Conv2d("res_skip", (2, 6, 6), np.ones((2, 1, 1, 1)), np.zeros(2), groups=2, inputs=("a",),
                     spiking=False)
    add = ir.Add("res", (2, 6, 6), ("res_c", "res_skip"), clip=3.0)
    flat = ir.Flatten("flat", (2, 6, 6))
    fc = ir.Dense("fc", rng.normal(0.05, 0.3, (3, 72)), np.full(3, 0.1))
    return ir.Graph(ir.Input((1, 6, 6)), (a, b, cat, c, br, skip, add, flat, fc))


def test_max_norm_scales_each_source_with_its_own_lambda(rng):
    graph = _dag(rng)
    x = rng.uniform(0, 1, (40, 1, 6, 6))
    stats = activation_stats(graph, x)
    out = max_norm(graph, stats, target_rate=500 * Hz, input_rate=500 * Hz)
    pred = predicted_rates_hz(out, x)
    acts = graph.forward(x, relu_last=True)
    lam = out.meta["normalization"]["lambda"]
    assert lam["res"] == 3.0  # the clip is λ (Rate Norm Layer)
    for layer in graph.spiking_layers:
        expected = 500.0 * acts[layer.name].reshape(len(x), -1) / lam[layer.name]
        np.testing.assert_allclose(pred[layer.name], expected, rtol=1e-9, atol=1e-9, err_msg=layer.name)
    assert max(stats.layer_max["a"], stats.layer_max["b"]) / min(stats.layer_max["a"], stats.layer_max["b"]) > 3


def test_threshold_form_gives_the_same_spikes(rng):
    graph = _dag(rng)
    x = rng.uniform(0, 1, (3, 1, 6, 6))
    out = max_norm(graph, activation_stats(graph, x), target_rate=300 * Hz, input_rate=300 * Hz)
    cfg = SimConfig(duration=40 * ms)
    ref = te.simulate(out, x, np.zeros(3), cfg, propagation="event", progress=False)
    th = te.simulate(threshold_form(out), x, np.zeros(3), cfg, propagation="event", progress=False)
    back = weight_form(threshold_form(out))
    np.testing.assert_allclose(back.layer("res_c").weight, out.layer("res_c").weight)
    for name in ref.counts:
        assert np.mean(ref.counts[name] == th.counts[name]) >= 0.99, name


def test_mcr_norm_on_a_dag(rng):
    graph = _dag(rng)
    x = rng.uniform(0, 1, (3, 1, 6, 6))
    probe = make_probe("torch", x, None, SimConfig(duration=100 * ms))
    out = mcr_norm(graph, activation_stats(graph, x), probe, target_rate=200 * Hz, input_rate=300 * Hz,
                   tolerance=0.05, max_iter=10, progress=False)
    achieved = out.meta["normalization"]["achieved_max_rate_hz"]
    for name in ("a", "b", "c", "fc"):
        assert abs(achieved[name] - 200.0) <= 0.05 * 200.0 + 10.0, (name, achieved[name])


def test_spike_norm_refuses_a_dag(rng):
    graph = _dag(rng)
    x = rng.uniform(0, 1, (2, 1, 6, 6))
    probe = make_probe("torch", x, None, SimConfig(duration=20 * ms))
    with pytest.raises(ValueError, match="sequential graph"):
        spike_norm(graph, activation_stats(graph, x), probe)


def test_mcr_divides_each_source_by_its_measured_slope(rng):
    """rho_from_slope on a DAG: every weight a layer receives from source m is divided by m's measured ρ̂_m."""
    graph = _dag(rng)
    x = rng.uniform(0, 1, (3, 1, 6, 6))
    probe = make_probe("torch", x, None, SimConfig(duration=100 * ms))
    out = mcr_norm(graph, activation_stats(graph, x), probe, target_rate=200 * Hz, input_rate=300 * Hz,
                   tolerance=0.05, max_iter=10, progress=False, rho_from_slope=True, calib_images=x)
    norm = out.meta["normalization"]
    rho_hat = norm["rho_measured"]
    assert set(rho_hat) == {"a", "b", "c", "res"}
    assert norm["rho_out"] == {**rho_hat, "fc": None}
    # slopes differ from the 0.2 target, so the test can tell the two rules apart
    assert max(abs(v / 0.2 - 1) for v in rho_hat.values()) > 0.05

    def expected(layer: str, source: str) -> float:
        lam_src = norm["lambda"][source]
        return norm["gain"][layer] * 0.2 / norm["lambda"][layer] * lam_src / rho_hat[source]

    for weighted, owner, source in (("c", "c", "a"), ("res_skip", "res", "a"), ("res_c", "res", "c"),
                                    ("fc", "fc", "res")):
        w0, w1 = graph.layer(weighted).weight, out.layer(weighted).weight
        if weighted == "c":  # reads the Concat: input channels 0-1 from a, 2-4 from b
            np.testing.assert_allclose(w1[:, :2], w0[:, :2] * expected("c", "a"), rtol=1e-9)
            np.testing.assert_allclose(w1[:, 2:], w0[:, 2:] * expected("c", "b"), rtol=1e-9)
        else:
            np.testing.assert_allclose(w1, w0 * expected(owner, source), rtol=1e-9, err_msg=weighted)
    # biases carry the layer's own factor only
    np.testing.assert_allclose(out.layer("res_c").bias,
                               graph.layer("res_c").bias * norm["gain"]["res"] * 0.2 / norm["lambda"]["res"])


def test_mcr_channel_slopes_divide_each_input_channel(rng):
    """slopes="channel": the weights from channel j of a conv source are divided by that channel's
    own measured slope, through a Concat, a residual branch and a Flatten into a dense layer."""
    graph = _dag(rng)
    x = rng.uniform(0, 1, (3, 1, 6, 6))
    probe = make_probe("torch", x, None, SimConfig(duration=100 * ms))
    out = mcr_norm(graph, activation_stats(graph, x), probe, target_rate=200 * Hz, input_rate=300 * Hz,
                   tolerance=0.05, max_iter=10, progress=False, rho_from_slope=True, calib_images=x,
                   slopes="channel")
    norm = out.meta["normalization"]
    per = {k: np.asarray(v) for k, v in norm["rho_measured_channels"].items()}
    assert norm["slopes"] == "channel" and set(per) == {"a", "b", "c", "res"}
    assert [len(per[k]) for k in ("a", "b", "c", "res")] == [2, 3, 2, 2]
    assert max(np.ptp(v) / v.mean() for v in per.values()) > 0.01  # channels really differ

    def factor(layer: str, source: str) -> np.ndarray:
        return norm["gain"][layer] * 0.2 / norm["lambda"][layer] * norm["lambda"][source] / per[source]

    w0, w1 = graph.layer("c").weight, out.layer("c").weight  # Concat: channels 0-1 from a, 2-4 from b
    cat = np.concatenate([factor("c", "a"), factor("c", "b")])
    np.testing.assert_allclose(w1, w0 * cat[None, :, None, None], rtol=1e-9)
    np.testing.assert_allclose(out.layer("res_c").weight,
                               graph.layer("res_c").weight * factor("res", "c")[None, :, None, None], rtol=1e-9)
    skip = graph.layer("res_skip").weight * factor("res", "a")[:, None, None, None]  # groups=2: one input each
    np.testing.assert_allclose(out.layer("res_skip").weight, skip, rtol=1e-9)
    dense = np.repeat(factor("fc", "res"), 36)  # flatten of (2, 6, 6): channel-major
    np.testing.assert_allclose(out.layer("fc").weight, graph.layer("fc").weight * dense[None, :], rtol=1e-9)
    # the network still meets its targets
    for name, rate in norm["achieved_max_rate_hz"].items():
        assert abs(rate - 200.0) <= 0.05 * 200.0 + 10.0, (name, rate)
    with pytest.raises(ValueError, match="slopes must be one of"):
        mcr_norm(graph, activation_stats(graph, x), probe, slopes="neuron", rho_from_slope=True, calib_images=x)
    with pytest.raises(ValueError, match="needs rho_from_slope"):
        mcr_norm(graph, activation_stats(graph, x), probe, slopes="channel", calib_images=x)


def test_channel_slopes_stay_per_layer_before_an_average_pool(rng):
    """A spiking average pool has one scale: the conv it reads keeps one slope."""
    conv = ir.Conv2d("conv", (1, 6, 6), rng.normal(0.5, 0.3, (3, 1, 3, 3)), np.full(3, 0.1), padding=1)
    pool = ir.AvgPool2d("pool", (3, 6, 6), (2, 2))
    flat = ir.Flatten("flat", (3, 3, 3))
    fc = ir.Dense("fc", rng.normal(0.1, 0.3, (2, 27)), np.zeros(2))
    graph = ir.Graph(ir.Input((1, 6, 6)), (conv, pool, flat, fc))
    x = rng.uniform(0, 1, (3, 1, 6, 6))
    probe = make_probe("torch", x, None, SimConfig(duration=100 * ms))
    out = mcr_norm(graph, activation_stats(graph, x), probe, target_rate=200 * Hz, input_rate=300 * Hz,
                   tolerance=0.05, max_iter=10, progress=False, rho_from_slope=True, calib_images=x,
                   slopes="channel")
    norm = out.meta["normalization"]
    assert set(norm["rho_measured_channels"]) == {"pool"}
    assert np.ndim(norm["rho_out"]["conv"]) == 0
