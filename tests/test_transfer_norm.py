"""MCR-TF: transfer-function calibration (gain and offset per layer) against the measured rates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from brian2 import Hz, ms

from bioconv import ir
from bioconv.neurons import IF, LIF
from bioconv.normalize import activation_stats, mcr_norm
from bioconv.normalize.probes import TorchProbe
from bioconv.normalize.transfer import TransferOptions, fit_line, transfer_norm, with_offsets
from bioconv.simulation import SimConfig
from bioconv.synapses import Delta

torch.set_num_threads(1)


def dense_graph(seed: int = 3) -> ir.Graph:
    """dense 16 -> 24 -> 4 with positive-leaning random weights and biases."""
    rng = np.random.default_rng(seed)
    fc1 = ir.Dense("fc1", rng.normal(0.08, 0.2, (24, 16)), rng.normal(0.05, 0.05, 24))
    fc2 = ir.Dense("fc2", rng.normal(0.02, 0.3, (4, 24)), rng.normal(0.0, 0.05, 4))
    flat_in = ir.Flatten("flat", (1, 4, 4))
    return ir.Graph(ir.Input((1, 4, 4)), (flat_in, fc1, fc2))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    images = rng.uniform(0, 1, (30, 1, 4, 4))
    return dense_graph(), images


def test_fit_line_recovers_a_line_and_weighs_bins_equally():
    rng = np.random.default_rng(0)
    # many weak neurons, few strong ones: a per-neuron fit would follow the weak cluster
    t = np.concatenate([rng.uniform(0, 10, 5000), rng.uniform(10, 200, 50), np.zeros(100)])
    r = 0.8 * t + 5.0
    r[t == 0] = 1.5
    fit = fit_line(t, r, bins=20)
    assert fit.slope == pytest.approx(0.8, rel=1e-9)
    assert fit.intercept_hz == pytest.approx(5.0, abs=1e-9)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.silent_rate_hz == pytest.approx(1.5)
    # a saturating response: equal bin weights put the line through the whole range
    sat = 300 * t / (100 + t)
    fit = fit_line(t, sat, bins=20)
    assert 0.5 < fit.slope < 1.5 and fit.intercept_hz > 10


def test_fit_line_errors():
    with pytest.raises(ValueError, match="no neuron of the layer is active"):
        fit_line(np.zeros(10), np.ones(10))
    with pytest.raises(ValueError, match="fewer than two bins"):
        fit_line(np.full(10, 3.0), np.ones(10))
    with pytest.raises(ValueError, match="differ in size"):
        fit_line(np.ones(3), np.ones(4))


def test_options_validation():
    with pytest.raises(ValueError, match="offset must be one of"):
        TransferOptions(offset="pixel")
    with pytest.raises(ValueError, match="iterations"):
        TransferOptions(iterations=-1)
    with pytest.raises(ValueError, match="bins"):
        TransferOptions(bins=1)
    with pytest.raises(ValueError, match="offset_sign must be one of"):
        TransferOptions(offset_sign="negative")


def test_with_offsets_adds_to_biases(data):
    graph, _ = data
    out = with_offsets(graph, {"fc1": np.array([0.25])})
    np.testing.assert_allclose(out.layer("fc1").bias, graph.layer("fc1").bias + 0.25)
    np.testing.assert_array_equal(out.layer("fc2").bias, graph.layer("fc2").bias)
    with pytest.raises(ValueError, match="takes one offset"):
        with_offsets(graph, {"fc1": np.array([0.1, 0.2])})


def _probe(images, dt_ms=0.5, duration_ms=400.0):
    cfg = SimConfig(duration=duration_ms * ms, dt=dt_ms * ms, bin=duration_ms * ms, seed=2)
    return TorchProbe(images, None, cfg)


def test_if_subtract_needs_no_offset(data):
    """IF with reset by subtraction is linear: the fit finds slope ~1 and a ~0 offset."""
    graph, images = data
    stats = activation_stats(graph, images)
    out = transfer_norm(graph, stats, _probe(images), images, target_rate=100 * Hz, input_rate=200 * Hz,
                        neuron=IF(reset="subtract"), synapse=Delta(), dt=0.5 * ms, progress=False)
    norm = out.meta["normalization"]
    assert norm["method"] == "mcr-tf"
    for name in ("fc1", "fc2"):
        fit = norm["fit"][name]
        assert fit["slope"] == pytest.approx(1.0, abs=0.12)
        assert abs(fit["intercept_hz"]) < 6.0
        assert abs(np.mean(fit["offset"])) < 0.01
        assert norm["achieved_max_rate_hz"][name] == pytest.approx(100.0, rel=0.02)
    # the next layer divides fc1's rates by its fitted slope; the output layer feeds none
    assert norm["rho_out"]["fc1"] == pytest.approx(0.1 * norm["fit"]["fc1"]["slope"], rel=1e-12)
    assert norm["rho_out"]["fc2"] is None and norm["rho_from_slope"] is True


def test_lif_offset_linearizes_the_rheobase(data):
    """A LIF (tau_m 20 ms) at a 100 Hz max rate: MCR leaves a large intercept (rheobase), MCR-TF removes most of it."""
    graph, images = data
    stats = activation_stats(graph, images)
    neuron = LIF(tau_m=20 * ms)
    kw = dict(target_rate=100 * Hz, input_rate=200 * Hz, neuron=neuron, synapse=Delta(), dt=0.5 * ms)
    tf = transfer_norm(graph, stats, _probe(images), images, progress=False, **kw)
    fit = tf.meta["normalization"]["fit"]["fc1"]
    assert fit["offset"][0] > 0.01  # leak compensation: a positive offset current
    # MCR-Norm (gain only) on the same probe: fit its response with the same binned line
    mcr = mcr_norm(graph, stats, _probe(images), progress=False, **kw)
    probe = _probe(images)
    ideal = graph.forward(images, relu_last=True)["fc1"] * 0.1 / stats.scale("fc1") / 1e-3
    mcr_fit = fit_line(ideal, probe(mcr, "fc1"))
    tf_fit = fit_line(ideal, probe(tf, "fc1"))
    assert abs(tf_fit.intercept_hz) < 0.5 * abs(mcr_fit.intercept_hz)
    assert tf.meta["normalization"]["achieved_max_rate_hz"]["fc1"] == pytest.approx(100.0, rel=0.02)


def test_positive_offset_sign_never_lowers_the_drive(data):
    """IF with reset to zero at dt = 1 ms saturates at the top (dead time): the free fit asks
    for a negative offset; ``offset_sign="positive"`` keeps every offset at >= 0."""
    graph, images = data
    stats = activation_stats(graph, images)
    kw = dict(target_rate=200 * Hz, input_rate=400 * Hz, neuron=IF(reset="zero"), synapse=Delta(), dt=1 * ms,
              progress=False)
    free = transfer_norm(graph, stats, _probe(images, dt_ms=1.0), images,
                         options=TransferOptions(offset_sign="any"), **kw)
    assert free.meta["normalization"]["fit"]["fc1"]["offset"][0] < 0
    pos = transfer_norm(graph, stats, _probe(images, dt_ms=1.0), images, **kw)  # the default
    norm = pos.meta["normalization"]
    assert norm["offset_sign"] == "positive"
    for name in ("fc1", "fc2"):
        assert min(norm["fit"][name]["offset"]) >= 0.0
        assert norm["achieved_max_rate_hz"][name] == pytest.approx(200.0, rel=0.02)


def test_channel_offsets_on_conv_layer():
    rng = np.random.default_rng(5)
    conv = ir.Conv2d("conv", (1, 6, 6), rng.normal(0.15, 0.3, (3, 1, 3, 3)), rng.normal(0.05, 0.05, 3), padding=1)
    flat = ir.Flatten("flat", (3, 6, 6))
    fc = ir.Dense("fc", rng.normal(0.01, 0.1, (4, 108)), rng.normal(0.0, 0.05, 4))
    graph = ir.Graph(ir.Input((1, 6, 6)), (conv, flat, fc))
    images = rng.uniform(0, 1, (12, 1, 6, 6))
    stats = activation_stats(graph, images)
    out = transfer_norm(graph, stats, _probe(images, duration_ms=200.0), images, target_rate=100 * Hz,
                        input_rate=200 * Hz, neuron=LIF(tau_m=20 * ms), synapse=Delta(), dt=0.5 * ms,
                        options=TransferOptions(offset="channel", iterations=2), progress=False)
    offsets = out.meta["normalization"]["offset"]
    assert len(offsets["conv"]) == 3 and len(offsets["fc"]) == 1


def test_probe_image_mismatch_is_an_error(data):
    graph, images = data
    stats = activation_stats(graph, images)
    with pytest.raises(ValueError, match="pass the probe's own calibration images"):
        transfer_norm(graph, stats, _probe(images), images[:5], progress=False)
