"""Input coding: rates from images, seeded reproducible Bernoulli/Poisson trains, signed spikes."""

from __future__ import annotations

import numpy as np
import pytest

from bioconv import ir
from bioconv.connectivity import layer_synapses
from bioconv.encoding import input_current, input_rates_hz, spike_probability, spike_trains

DT = 1e-3


def test_input_rates_and_signs(rng):
    inp = ir.Input((2, 3, 4), rate_scale=250.0)
    x = rng.normal(size=(5, 2, 3, 4))
    x[0, 0, 0, 0] = 0.0
    rates, signs = input_rates_hz(x, inp)
    assert rates.shape == signs.shape == (5, 24) and signs.dtype == np.int8 and rates.dtype == np.float64
    np.testing.assert_allclose(rates, 250.0 * np.abs(x.reshape(5, -1)))  # torch flatten order (C, H, W)
    np.testing.assert_array_equal(signs, np.sign(x.reshape(5, -1)))
    assert signs[0, 0] == 0 and rates[0, 0] == 0
    r1, s1 = input_rates_hz(x[1], inp)  # a single image
    np.testing.assert_array_equal(r1, rates[1:2])
    with pytest.raises(ValueError, match="expected"):
        input_rates_hz(x[:, :1], inp)
    with pytest.raises(ValueError, match="NaN"):
        input_rates_hz(np.full((1, 2, 3, 4), np.nan), inp)


@pytest.mark.parametrize("coding", ["bernoulli", "poisson"])
def test_reproducible_and_batch_split_invariant(rng, coding):
    rates = rng.random((6, 50)) * 400.0
    signs = np.ones((6, 50), np.int8)
    a = spike_trains(rates, signs, DT, 80, coding, seed=7)
    assert a.dtype == np.int8 and a.shape == (6, 80, 50)
    np.testing.assert_array_equal(a, spike_trains(rates, signs, DT, 80, coding, seed=7))
    # any split into batches (workers) gives the same trains, image by image
    parts = [spike_trains(rates[s], signs[s], DT, 80, coding, seed=7, first_index=s.start)
             for s in (slice(0, 1), slice(1, 4), slice(4, 6))]
    np.testing.assert_array_equal(np.concatenate(parts), a)
    # image k uses default_rng([seed, index]) directly
    u = np.random.default_rng([7, 3]).random((80, 50))
    np.testing.assert_array_equal(a[3], (u < spike_probability(rates[3], DT, coding)).astype(np.int8))
    b = spike_trains(rates, signs, DT, 80, coding, seed=8)
    assert not np.array_equal(a, b)
    # the same image at another dataset index gets another train
    c = spike_trains(rates[:1], signs[:1], DT, 80, coding, seed=7, first_index=1)
    assert not np.array_equal(c[0], a[0])


@pytest.mark.parametrize("coding", ["bernoulli", "poisson"])
def test_rate_statistics(coding):
    """Spike counts are Binomial(T, p) with p = r dt (bernoulli) or 1 - exp(-r dt) (poisson)."""
    levels = np.array([0.0, 10.0, 100.0, 400.0, 1000.0])
    n_rep, n_steps = 400, 500
    rates = np.tile(levels, (1, n_rep))
    spikes = spike_trains(rates, np.ones_like(rates, np.int8), DT, n_steps, coding, seed=1)
    p_emp = spikes.mean(axis=1)[0].reshape(n_rep, len(levels)).mean(axis=0)
    p = levels * DT if coding == "bernoulli" else 1 - np.exp(-levels * DT)
    se = np.sqrt(p * (1 - p) / (n_rep * n_steps))
    assert np.all(np.abs(p_emp - p) <= 5 * se + 1e-12), (p_emp, p)
    assert p_emp[0] == 0  # rate 0 never spikes
    if coding == "bernoulli":
        assert p_emp[-1] == 1.0  # rate 1/dt spikes every step
    else:
        assert 0.62 < p_emp[-1] < 0.64  # 1 - 1/e: a Poisson process loses the events beyond one per step


def test_signed_spikes(rng):
    inp = ir.Input((1, 4, 4), rate_scale=500.0)
    x = rng.normal(size=(3, 1, 4, 4))
    rates, signs = input_rates_hz(x, inp)
    rates = np.minimum(rates, 1 / DT)
    spikes = spike_trains(rates, signs, DT, 300, "bernoulli", seed=2)
    assert set(np.unique(spikes)) == {-1, 0, 1}
    nonzero = spikes != 0
    np.testing.assert_array_equal(np.sign(spikes), np.where(nonzero, signs[:, None, :], 0))
    # unsigned magnitudes are those of the unsigned train
    ref = spike_trains(rates, np.ones_like(signs), DT, 300, "bernoulli", seed=2)
    np.testing.assert_array_equal(np.abs(spikes), ref * np.abs(signs)[:, None, :])


def test_current_coding(rng):
    layer = ir.Dense("fc", rng.normal(size=(3, 8)), np.zeros(3))
    rates = rng.random((2, 8)) * 200
    signs = np.where(rng.random((2, 8)) < 0.5, -1, 1).astype(np.int8)
    assert not spike_trains(rates, signs, DT, 10, "current", seed=0).any()
    np.testing.assert_allclose(input_current(rates, signs), rates * signs)
    np.testing.assert_allclose(input_current(rates, signs, layer), (rates * signs) @ layer.weight.T)
    # the mean signed spike rate of the bernoulli coding equals the current coding's per-input rate
    spikes = spike_trains(np.repeat(rates, 200, axis=0), np.repeat(signs, 200, axis=0), DT, 200, "bernoulli", seed=0)
    mean_rate = spikes.reshape(2, 200 * 200, 8).mean(axis=1) / DT
    se = np.sqrt(rates * DT * (1 - rates * DT) / (200 * 200)) / DT
    assert np.all(np.abs(mean_rate - input_current(rates, signs)) <= 5 * se + 1e-9)
    with pytest.raises(ValueError, match="no weighted synapses"):
        input_current(np.ones((1, 4)), np.ones((1, 4), np.int8), ir.MaxPool2d("mp", (1, 2, 2)))
    assert layer_synapses(layer).n_pre == 8


def test_validation():
    ones = np.ones((1, 3), np.int8)
    with pytest.raises(ValueError, match="exceeds 1/dt"):
        spike_trains(np.array([[10.0, 1001.0, 5.0]]), ones, DT, 5, "bernoulli", seed=0)
    with pytest.raises(ValueError, match="exceeds 1/dt"):
        spike_trains(np.array([[10.0, 600.0, 5.0]]), ones, 2e-3, 5, "poisson", seed=0)
    spike_trains(np.array([[1000.0, 0.0, 5.0]]), ones, DT, 5, "bernoulli", seed=0)  # exactly 1/dt is fine
    with pytest.raises(ValueError, match="coding"):
        spike_trains(np.ones((1, 3)), ones, DT, 5, "rank", seed=0)
    with pytest.raises(ValueError, match="signs"):
        spike_trains(np.ones((1, 3)), np.ones((1, 4), np.int8), DT, 5, "bernoulli", seed=0)
    with pytest.raises(ValueError, match=">= 0"):
        spike_trains(-np.ones((1, 3)), ones, DT, 5, "bernoulli", seed=0)
    with pytest.raises(ValueError, match="n_steps"):
        spike_trains(np.ones((1, 3)), ones, DT, 0, "bernoulli", seed=0)
    with pytest.raises(ValueError, match="dt_s"):
        spike_trains(np.ones((1, 3)), ones, 0.0, 5, "bernoulli", seed=0)
