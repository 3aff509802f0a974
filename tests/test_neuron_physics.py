r"""Brian2 runtime (numpy target) checks of the neuron and synapse models against analytic results.

Schedule (Brian2 default): state update → threshold → synapses → reset, so an input spike
emitted at step n arrives in step n, and a neuron driven by a constant increment
:math:`a = I_\mathrm{bias}\,\Delta t/\tau` per step crosses the *strict* threshold
:math:`v > \theta` at the first step n with :math:`n a > \theta`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from brian2 import (
    Network,
    NeuronGroup,
    SpikeGeneratorGroup,
    SpikeMonitor,
    StateMonitor,
    Synapses,
    defaultclock,
    ms,
    prefs,
    start_scope,
)

from bioconv.neurons import IF, LIF, SRM
from bioconv.synapses import Alpha, Delta

prefs.codegen.target = "numpy"


def _group(neuron, synapse, n: int, name: str = "layer") -> NeuronGroup:
    return NeuronGroup(
        n,
        neuron.equations() + synapse.post_equations(neuron),
        threshold=neuron.threshold,
        reset=neuron.reset_code,
        refractory=neuron.refractory,
        method=neuron.method,
        name=name,
    )


def _bias_run(neuron, bias: np.ndarray, theta: float, dt, duration):
    start_scope()
    defaultclock.dt = dt
    group = _group(neuron, Delta(), len(bias))
    group.I_bias = bias
    group.theta = theta
    mon = SpikeMonitor(group)
    Network(group, mon).run(duration)
    return mon


@pytest.mark.parametrize("theta", [1.0, 0.7])
def test_if_subtract_rate_is_exactly_bias_over_theta(theta):
    """IF(subtract): no charge is lost, so after T steps the count is ⌊T·a/θ⌋ (strict threshold: −1)."""
    bias = theta * np.array([0.0, 0.013, 0.1, 0.37, 0.5, 0.731, 0.99])  # below 1 spike per step
    n_steps = 2000
    mon = _bias_run(IF(reset="subtract"), bias, theta, 1 * ms, n_steps * ms)
    counts = np.asarray(mon.count)
    expected = n_steps * bias / theta  # rate·τ = I/θ, per 1-ms step
    assert np.all(counts <= np.floor(expected + 1e-9)) and np.all(counts >= np.floor(expected) - 1), (counts, expected)
    np.testing.assert_allclose(counts / n_steps, bias / theta, atol=1.0 / n_steps)


def test_if_subtract_continuous_time_rate():
    """With dt = 0.25 ms the rate per second is still I_bias/(θ τ) (bias per step is I_bias·dt/τ)."""
    bias = np.array([0.05, 0.2, 0.45])
    mon = _bias_run(IF(reset="subtract"), bias, 1.0, 0.25 * ms, 1000 * ms)
    np.testing.assert_allclose(np.asarray(mon.count) / 1.0, bias * 1000.0, atol=1.0)


def test_if_zero_stepped_response():
    r"""IF(zero) (seed 000 Fig. 1a): the residual above θ is lost at every reset.

    v grows by a = I·dt/τ per step and fires at the first step n with n·a > θ, then restarts
    from 0, so the period is n = ⌊θ/a⌋ + 1 steps, i.e. ⌈θ/a⌉ when θ/a is not an integer: the
    rate per step is 1/⌈θ/a⌉ — a staircase below the ReLU line a/θ.
    """
    theta = 1.0
    # a with θ/a non-integer (away from float ties), plus exact-integer ratios 1/2, 1/4
    bias = np.array([0.09, 0.3, 0.34, 0.45, 0.6, 0.7, 0.95, 0.5, 0.25])
    n_steps = 3000
    mon = _bias_run(IF(reset="zero"), bias, theta, 1 * ms, n_steps * ms)
    period = np.floor(theta / bias + 1e-9) + 1  # strict threshold v > θ
    generic = slice(0, 7)
    np.testing.assert_array_equal(period[generic], np.ceil(theta / bias[generic]))
    np.testing.assert_array_equal(np.asarray(mon.count), np.floor(n_steps / period).astype(int))
    # the staircase: 0.34, 0.45 share one step (period 3), and the rate never exceeds ReLU a/θ
    counts = np.asarray(mon.count)
    assert counts[2] == counts[3] == n_steps // 3
    assert np.all(counts / n_steps <= bias / theta + 1e-12)
    # the spikes of each neuron are exactly `period` steps apart
    trains = mon.spike_trains()
    for k in range(len(bias)):
        steps = np.round(trains[k] / ms).astype(int)
        assert np.all(np.diff(steps) == period[k])


@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("t_ref", [0.0, 2.0])
def test_lif_fi_curve(reset, t_ref):
    r"""LIF f–I curve :math:`r = 1/(t_\mathrm{ref} + \tau_m \ln(RI/(RI-\theta)))` within 1 %.

    Measured from inter-spike intervals at dt = 0.01 ms. With reset by subtraction the
    neuron restarts at v − θ ≈ 0 (overshoot ≤ one step's increment), so the curve holds too.
    """
    tau_m, theta = 20.0, 1.0
    neuron = LIF(tau_m=tau_m * ms, reset=reset, refractory=t_ref * ms)
    ri = np.array([1.05, 1.2, 1.5, 2.0, 4.0, 10.0])  # RI / θ
    bias = ri * theta * float(neuron.tau / neuron.tau_m)  # RI = I_bias τ_m / τ
    mon = _bias_run(neuron, bias, theta, 0.01 * ms, 150 * ms)
    expected = 1.0 / (t_ref + tau_m * np.log(ri / (ri - theta)))  # spikes per ms
    trains = mon.spike_trains()
    for k in range(len(ri)):
        isi = np.diff(np.asarray(trains[k] / ms))
        assert len(isi) >= 1
        np.testing.assert_allclose(1.0 / isi.mean(), expected[k], rtol=0.01)
    # sub-threshold drive (RI < θ) never fires
    sub = _bias_run(neuron, np.array([0.9 * theta * float(neuron.tau / neuron.tau_m)]), theta, 0.1 * ms, 200 * ms)
    assert sub.count[0] == 0


def _one_spike_run(neuron, synapse, w: float, t_spike, duration, dt, variables):
    start_scope()
    defaultclock.dt = dt
    source = SpikeGeneratorGroup(1, [0], [t_spike], name="source")
    group = _group(neuron, synapse, 1)
    group.theta = 1e9
    syn = Synapses(source, group, "w : 1", on_pre=synapse.on_pre(neuron), name="syn")
    syn.connect(i=0, j=0)
    syn.w = w
    state = StateMonitor(group, variables, record=0)
    Network(source, group, syn, state).run(duration)
    return state


@pytest.mark.parametrize("tau_s", [1.0, 2.5])
def test_srm_psp_peaks_at_tau_s_with_height_w(tau_s):
    """SRM + delta: one input spike gives u(t) = w·ε(t − t0), peak w at t0 + τ_s."""
    w, t0, dt = 0.8, 1.0, 0.01
    neuron = SRM(tau_s=tau_s * ms, tau_r=3 * ms)
    state = _one_spike_run(neuron, Delta(), w, t0 * ms, (t0 + 8 * tau_s) * ms, dt * ms, ["u", "psi"])
    t = np.asarray(state.t / ms)
    u = np.asarray(state.u[0])
    peak = int(np.argmax(u))
    assert abs((t[peak] - t0) - tau_s) <= dt + 1e-9
    np.testing.assert_allclose(u.max(), w, rtol=1e-6)
    # the whole kernel: u = w (s/τ_s) e^{1 - s/τ_s}, s = t - t0 (StateMonitor samples before the update)
    s = t - t0 - dt
    expected = np.where(s >= 0, w * (s / tau_s) * np.exp(1 - s / tau_s), 0.0)
    np.testing.assert_allclose(u, expected, atol=1e-9)


def test_srm_refractory_kernel():
    """After an output spike, u drops by 2θ and the drop decays with τ_r (ν = −2θ e^{−t/τ_r})."""
    start_scope()
    defaultclock.dt = 0.01 * ms
    neuron = SRM(tau_s=1 * ms, tau_r=2 * ms)
    group = _group(neuron, Delta(), 1)
    group.theta = 0.5
    group.I_bias = 1.0
    state = StateMonitor(group, ["r"], record=0)
    mon = SpikeMonitor(group)
    Network(group, state, mon).run(20 * ms)
    assert mon.num_spikes >= 2
    t = np.asarray(state.t / ms)
    r = np.asarray(state.r[0])
    first = float(mon.t[0] / ms)
    second = float(mon.t[1] / ms)
    between = (t > first + 0.005) & (t < second)
    expected = -2 * 0.5 * np.exp(-(t[between] - first - 0.01) / 2.0)
    np.testing.assert_allclose(r[between], expected, rtol=1e-6)


@pytest.mark.parametrize("neuron", [IF(reset="zero"), IF(reset="subtract")], ids=["IF-zero", "IF-subtract"])
@pytest.mark.parametrize("tau_s", [0.5, 2.0])
def test_alpha_synapse_delivers_total_charge_w(neuron, tau_s):
    """Alpha synapse: I_syn(t) = (w/τ_s)(t/τ_s)e^{−t/τ_s}, whose integral is w: v(∞) = w."""
    w = 0.37
    state = _one_spike_run(neuron, Alpha(tau_s=tau_s * ms), w, 1 * ms, (1 + 40 * tau_s) * ms, 0.1 * ms, ["v"])
    v = np.asarray(state.v[0])
    assert abs(v[-1] - w) <= 1e-6
    assert np.all(np.diff(v) >= -1e-15)  # a positive charge only ever adds
    # v(t) = w [1 − (1 + s/τ_s) e^{−s/τ_s}] (exact integration; sampled before each update)
    t = np.asarray(state.t / ms)
    s = np.clip(t - 1.0 - 0.1, 0, None)
    np.testing.assert_allclose(v, w * (1 - (1 + s / tau_s) * np.exp(-s / tau_s)), atol=1e-9)


def test_delta_synapse_jumps_by_w():
    state = _one_spike_run(IF(), Delta(), 0.42, 1 * ms, 3 * ms, 0.1 * ms, ["v"])
    v = np.asarray(state.v[0])
    assert set(np.round(np.unique(v), 12)) == {0.0, 0.42}


def test_gated_maxpool_brian2_code_matches_reference():
    """GatedMaxPool.on_pre_gate + the delta delivery, run in Brian2, passes exactly the reference spikes."""
    from bioconv import ir
    from bioconv.connectivity import layer_synapses

    pool = layer_synapses(ir.MaxPool2d("mp", (2, 4, 6), kernel_size=2, stride=2))
    rng = np.random.default_rng(3)
    n_steps = 120
    spikes = (rng.random((n_steps, pool.n_pre)) < rng.random(pool.n_pre) * 0.6).astype(np.int8)
    pre, step = np.nonzero(spikes.T)
    start_scope()
    defaultclock.dt = 1 * ms
    neuron = IF()
    source = SpikeGeneratorGroup(pool.n_pre, pre, step * ms, name="source")
    eqs = neuron.equations() + Delta().post_equations(neuron) + "\n".join(f"{k} : 1" for k in pool.post_state)
    group = NeuronGroup(pool.n_post, eqs, threshold=neuron.threshold, method=neuron.method, name="pool")
    group.theta = 1e9  # never fires: v counts the passed spikes
    for name, value in pool.post_state.items():
        setattr(group, name, value)
    syn = Synapses(source, group, "c : 1", on_pre=pool.on_pre_gate + "\n" + Delta().on_pre(neuron), name="gate")
    syn.connect(i=pool.i, j=pool.j)
    state = StateMonitor(group, "v", record=True, when="end")
    Network(source, group, syn, state).run(n_steps * ms)
    passed = np.diff(np.asarray(state.v), axis=1, prepend=0.0).T
    ref = pool.run(spikes)
    assert ref.sum() > 100
    np.testing.assert_array_equal(passed, ref)


def test_unit_errors_raise():
    with pytest.raises(ValueError, match="time quantity"):
        IF(tau=5)
    with pytest.raises(ValueError, match="time quantity"):
        LIF(tau_m=20)
    with pytest.raises(ValueError, match="time quantity"):
        SRM(tau_s=1 * ms / ms)
    with pytest.raises(ValueError, match="time quantity"):
        Alpha(tau_s=2.0)
    with pytest.raises(ValueError, match="> 0"):
        IF(tau=0 * ms)
    with pytest.raises(ValueError, match="reset"):
        IF(reset="hold")
    with pytest.raises(ValueError, match="delta"):
        Alpha().post_equations(SRM())
    assert math.isclose(SRM().psp_gain, math.e)
