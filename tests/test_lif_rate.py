"""Training for the LIF (SoftLIF, Hunsberger & Eliasmith 2015) and its fit-free conversion, method ``lif-rate``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from brian2 import Hz, ms

from bioconv import ir
from bioconv.ann.activations import SoftLIF, make_activation
from bioconv.neurons import IF, LIF
from bioconv.normalize import activation_stats
from bioconv.normalize.lif_rate import lif_rate_norm
from bioconv.simulation import SimConfig
from bioconv.synapses import Alpha, Delta

torch.set_num_threads(1)
CURVE = ir.LIFRate(tau_rc=0.02, tau_ref=0.002, amplitude=0.01, smoothing=0.0)


def exact_lif_rate(z: np.ndarray, tau_rc: float = 0.02, tau_ref: float = 0.002) -> np.ndarray:
    """The textbook LIF rate under constant drive z (threshold 1, reset to zero)."""
    z = np.asarray(z, dtype=float)
    out = np.zeros_like(z)
    on = z > 1
    out[on] = 1.0 / (tau_ref + tau_rc * np.log(z[on] / (z[on] - 1.0)))
    return out


def test_rate_curve_is_the_lif_rate_and_its_inverse():
    z = np.array([-1.0, 0.5, 1.0, 1.001, 1.2, 2.0, 5.0, 40.0])
    assert np.allclose(CURVE.rate_hz(z), exact_lif_rate(z), rtol=1e-12)
    for rate in (5.0, 50.0, 200.0, 450.0):
        assert CURVE.rate_hz(np.array([CURVE.drive_for_rate(rate)]))[0] == pytest.approx(rate, rel=1e-10)
    with pytest.raises(ValueError, match="maximum 1/tau_ref = 500 Hz"):
        CURVE.drive_for_rate(600.0)
    smooth = ir.LIFRate(0.02, 0.002, 0.01, smoothing=0.05)
    assert smooth.rate_hz(np.array([1.0]))[0] > 0  # smoothed: no hard rheobase
    assert smooth.rate_hz(np.array([3.0]))[0] == pytest.approx(exact_lif_rate(np.array([3.0]))[0], rel=1e-6)
    with pytest.raises(ValueError, match="LIFRate.tau_rc must be finite and > 0"):
        ir.LIFRate(0.0, 0.002, 0.01)


def test_softlif_module_matches_the_numpy_curve_and_has_finite_gradients():
    m = SoftLIF(tau_rc=0.02, tau_ref=0.002, amplitude=0.02, smoothing=0.05).double()
    z = torch.linspace(-30, 20, 2001, dtype=torch.float64, requires_grad=True)
    a = m(z)
    assert np.allclose(a.detach().numpy(), m.curve.activation(z.detach().numpy()), rtol=1e-12, atol=1e-15)
    a.sum().backward()
    assert torch.isfinite(z.grad).all()
    assert float(z.grad[-1]) > 0
    with pytest.raises(ValueError, match="unknown SoftLIF parameter"):
        make_activation("softlif", softlif={"tau": 0.02})


def test_softlif_network_imports_with_its_rate_curve_and_round_trips(tmp_path):
    from bioconv.ann import build_model
    from bioconv.from_torch import from_torch
    from bioconv.graphio import load_graph, save_graph

    torch.manual_seed(0)
    model = build_model("4c3-p2-8FC-10FC", (1, 8, 8), 10, activation="softlif",
                        softlif={"tau_rc": 0.02, "tau_ref": 0.002, "amplitude": 0.02, "smoothing": 0.05}).double().eval()
    graph = from_torch(model, (1, 8, 8))  # verifies the IR forward against torch
    curves = {l.name: l.rate_curve for l in graph.layers if getattr(l, "rate_curve", None) is not None}
    assert sorted(curves) == ["conv1", "fc1"]
    x = torch.rand(5, 1, 8, 8, dtype=torch.float64) * 3
    assert np.allclose(graph.forward(x.numpy())["fc2"], model(x).detach().numpy(), rtol=1e-10, atol=1e-12)
    save_graph(graph, tmp_path / "g.bcv")
    back = load_graph(tmp_path / "g.bcv")
    assert back.layer("conv1").rate_curve == curves["conv1"]


def curved_graph(seed: int = 5) -> ir.Graph:
    """dense 16 -> 24 (rate curve) -> 4, weights that drive most hidden neurons above the rheobase."""
    rng = np.random.default_rng(seed)
    fc1 = ir.Dense("fc1", rng.normal(0.25, 0.3, (24, 16)), rng.normal(0.0, 0.5, 24), rate_curve=CURVE)
    fc2 = ir.Dense("fc2", rng.normal(0.0, 1.0, (4, 24)), rng.normal(0.5, 0.2, 4))
    return ir.Graph(ir.Input((1, 4, 4)), (ir.Flatten("flat", (1, 4, 4)), fc1, fc2))


@pytest.mark.parametrize("synapse", [Delta(), Alpha(tau_s=5 * ms)], ids=["delta", "alpha"])
def test_lif_neurons_fire_at_the_trained_rates(synapse):
    """Current input: every hidden LIF gets its ANN pre-activation as a constant drive, so it fires at
    the curve's rate a/A (analytic), and the output ranks as the ANN's logits."""
    from bioconv.engines.torch import simulate

    graph = curved_graph()
    images = np.random.default_rng(2).uniform(0, 1, (12, 1, 4, 4))
    ann = graph.forward(images)
    neuron = LIF(tau_m=20 * ms, refractory=2 * ms, reset="zero")
    snn = lif_rate_norm(graph, activation_stats(graph, images), target_rate=100 * Hz, input_rate=200 * Hz,
                        neuron=neuron, synapse=synapse, dt=0.05 * ms)
    assert all(getattr(l, "rate_curve", None) is None for l in snn.layers)
    cfg = SimConfig(duration=1000 * ms, dt=0.05 * ms, coding="current")
    res = simulate(snn, images, np.zeros(len(images), int), cfg, progress=False)
    want = ann["fc1"] / CURVE.amplitude
    got = res.rates_hz("fc1")
    assert want.max() > 100 and (want == 0).mean() > 0.05  # both regimes: silent and fast
    # spike times are quantized to dt and the run is finite: |error| <= r^2 dt + 1/T
    assert np.all(np.abs(got - want) <= want ** 2 * 0.05e-3 * 1.5 + 1.0 + 0.005 * want)
    logits = ann["fc2"]
    counts = res.output_counts[:, -1, :]
    strong = logits.max(axis=1) > np.sort(logits, axis=1)[:, -2] + 0.5  # a clear winner
    assert np.all(counts[strong].argmax(axis=1) == logits[strong].argmax(axis=1))


def test_lif_rate_refuses_what_it_cannot_convert():
    graph = curved_graph()
    images = np.random.default_rng(2).uniform(0, 1, (8, 1, 4, 4))
    stats = activation_stats(graph, images)
    with pytest.raises(ValueError, match=r"--tau-m 20ms --refractory 2ms --reset zero"):
        lif_rate_norm(graph, stats, neuron=LIF(tau_m=10 * ms, refractory=2 * ms))
    with pytest.raises(ValueError, match=r"not IF"):
        lif_rate_norm(graph, stats, neuron=IF())
    with pytest.raises(ValueError, match=r"reset='subtract'"):
        lif_rate_norm(graph, stats, neuron=LIF(tau_m=20 * ms, refractory=2 * ms, reset="subtract"))
    relu = ir.Graph(graph.input, tuple(l if not isinstance(l, ir.Dense) else
                                       ir.Dense(l.name, l.weight, l.bias) for l in graph.layers))
    with pytest.raises(ValueError, match=r"bioconv train --activation softlif"):
        lif_rate_norm(relu, activation_stats(relu, images), neuron=LIF(tau_m=20 * ms, refractory=2 * ms))
    with pytest.raises(ValueError, match=r"below the LIF's maximum"):
        lif_rate_norm(graph, stats, target_rate=600 * Hz, dt=0.1 * ms,
                      neuron=LIF(tau_m=20 * ms, refractory=2 * ms))
    with pytest.raises(ValueError, match="either a clip"):
        ir.Dense("d", np.ones((2, 2)), np.zeros(2), clip=1.0, rate_curve=CURVE)


def test_lif_rate_default_neuron_is_the_curves_lif():
    graph = curved_graph()
    images = np.random.default_rng(2).uniform(0, 1, (8, 1, 4, 4))
    snn = lif_rate_norm(graph, activation_stats(graph, images))
    assert isinstance(snn.neuron, LIF) and math.isclose(float(snn.neuron.tau_m / ms), 20.0)
    assert snn.meta["normalization"]["method"] == "lif-rate"
    assert snn.meta["normalization"]["rate_curve"]["amplitude"] == CURVE.amplitude
    # weights: W A_prev / tau_m (fc2: times the output gain); biases b tau / tau_m
    fc1, fc2 = snn.layer("fc1"), snn.layer("fc2")
    a0 = 1.0 / snn.input.rate_scale
    assert np.allclose(fc1.weight, graph.layer("fc1").weight * a0 / 0.02)
    assert np.allclose(fc1.bias, graph.layer("fc1").bias * 1e-3 / 0.02)
    k = snn.meta["normalization"]["output_gain"]
    assert np.allclose(fc2.weight, graph.layer("fc2").weight * CURVE.amplitude / 0.02 * k)


@pytest.fixture(scope="module")
def softlif_ckpt(tmp_path_factory, mnist_dir):
    """An untrained (seeded) SoftLIF net saved as `bioconv train --activation softlif` saves it."""
    from bioconv.ann import build_model
    from bioconv.ann.checkpoint import save_checkpoint

    params = {"tau_rc": 0.02, "tau_ref": 0.002, "amplitude": 0.02, "smoothing": 0.05}
    torch.manual_seed(0)
    model = build_model("4c3-p2-8c3-p2-10FC", (1, 28, 28), 10, activation="softlif", softlif=params).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny-softlif.pt"
    save_checkpoint(model, {"arch": "custom", "spec": "4c3-p2-8c3-p2-10FC", "dataset": "mnist",
                            "input_shape": [1, 28, 28], "n_classes": 10, "test_accuracy": None,
                            "activation": {"kind": "softlif", "softlif": params}}, path)
    return path


def test_pipeline_converts_a_softlif_checkpoint_and_refuses_relu_methods(softlif_ckpt, mnist_dir):
    from bioconv.ann import load_checkpoint
    from bioconv.pipeline import conversion
    from bioconv.pipeline_spec import ConversionSpec

    model, _ = load_checkpoint(softlif_ckpt)
    assert isinstance(model.lif1, SoftLIF)
    spec = ConversionSpec(method="lif-rate", neuron="lif", tau_m=20 * ms, refractory=2 * ms, synapse="alpha",
                          tau_syn=5 * ms, calib_n=20)
    conv = conversion(spec, softlif_ckpt, data_dir=str(mnist_dir))
    assert conv.snn.meta["normalization"]["method"] == "lif-rate"
    assert conv.ann.layer("conv1").rate_curve is not None  # the source ANN keeps its activation
    with pytest.raises(ValueError, match="trained with the LIF rate curve.*method 'lif-rate'"):
        conversion(ConversionSpec(method="mcr", neuron="lif", calib_n=20), softlif_ckpt, data_dir=str(mnist_dir))
    with pytest.raises(ValueError, match="--tau-m 20ms --refractory 2ms"):
        conversion(ConversionSpec(method="lif-rate", neuron="lif", tau_m=10 * ms, refractory=2 * ms, calib_n=20),
                   softlif_ckpt, data_dir=str(mnist_dir))


def test_rate_curves_travel_through_nir(tmp_path):
    from bioconv.nirio import ImportOptions, from_nir, read_nir, write_nir

    graph = curved_graph().with_models(neuron=LIF(tau_m=20 * ms), synapse=Delta())  # the ANN graph, models for NIR
    back = from_nir(read_nir(write_nir(graph, tmp_path / "net.nir")), ImportOptions())
    assert back.layer("fc1").rate_curve == CURVE and back.layer("fc2").rate_curve is None


def test_cli_trains_a_softlif_network_that_learns_and_converts_with_lif_rate(tmp_path, capsys):
    from bioconv import cli
    from bioconv.ann import load_checkpoint
    from bioconv.from_torch import from_torch

    out = tmp_path / "softlif.pt"
    rc = cli.main(["train", "--arch", "tiny", "--dataset", "digits", "--epochs", "12", "--seed", "0",
                   "--activation", "softlif", "--tau-m", "20ms", "--refractory", "1ms", "--rate-scale", "100Hz",
                   "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    model, meta = load_checkpoint(out)
    assert meta["activation"]["softlif"] == {"tau_rc": 0.02, "tau_ref": 0.001, "amplitude": 0.01, "smoothing": 0.05,
                                             "noise_hz": 0.0}
    graph = from_torch(model, tuple(meta["input_shape"]))
    weighted = [l for l in graph.spiking_layers[:-1] if isinstance(l, (ir.Conv2d, ir.Dense))]
    assert weighted and {l.rate_curve for l in weighted} == {ir.LIFRate(0.02, 0.001, 0.01, 0.05)}
    assert meta["test_accuracy"] > 0.4  # it learns (60 % after 12 epochs; chance is 10 %)
    rc = cli.main(["train", "--arch", "tiny", "--dataset", "digits", "--rate-scale", "20Hz", "--out",
                   str(tmp_path / "x.pt")])
    assert rc == 2 and "belong to --activation softlif" in capsys.readouterr().err


def test_rate_ceiling_penalizes_only_rates_above_the_limit_and_only_in_training():
    from bioconv.ann.activations import RateCeiling

    torch.manual_seed(0)
    act = SoftLIF(tau_rc=0.02, tau_ref=0.002, amplitude=0.02, smoothing=0.05).double()
    model = torch.nn.Sequential(torch.nn.Linear(2, 3).double(), act)
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([0.5, 1.5, 4.0], dtype=torch.float64))
    ceiling = RateCeiling(model, max_rate_hz=50.0, weight=2.0)
    rates = act.curve.rate_hz(np.array([0.5, 1.5, 4.0]))
    model.train()
    model(torch.zeros(1, 2, dtype=torch.float64))
    want = 2.0 * np.mean(np.maximum(rates - 50.0, 0.0) ** 2) / 50.0 ** 2
    assert rates[0] < rates[1] < 50 < rates[2]
    assert float(ceiling()) == pytest.approx(want, rel=1e-9)
    assert float(ceiling()) == 0.0  # it forgets the recorded outputs
    model.eval()
    model(torch.zeros(1, 2, dtype=torch.float64))
    assert float(ceiling()) == 0.0  # evaluation passes are not recorded
    with pytest.raises(ValueError, match="needs SoftLIF layers"):
        RateCeiling(torch.nn.Sequential(torch.nn.ReLU()), 50.0)


def test_cli_max_rate_keeps_the_trained_rates_low(tmp_path, capsys):
    from bioconv import cli
    from bioconv.ann import load_checkpoint
    from bioconv.data import load_dataset

    rates = {}
    for tag, extra in (("free", []), ("capped", ["--max-rate", "30Hz", "--rate-penalty", "10"])):
        out = tmp_path / f"{tag}.pt"
        rc = cli.main(["train", "--arch", "tiny", "--dataset", "digits", "--epochs", "12", "--seed", "0",
                       "--activation", "softlif", "--rate-scale", "50Hz", "--out", str(out), "--no-progress", *extra])
        assert rc == 0, capsys.readouterr().err
        model, meta = load_checkpoint(out)
        acts = []
        for m in model.modules():
            if isinstance(m, SoftLIF):
                m.register_forward_hook(lambda mod, i, o: acts.append(o.detach().numpy() / mod.curve.amplitude))
        with torch.no_grad():
            model(torch.as_tensor(load_dataset("digits", "test").images[:200], dtype=torch.float32))
        rates[tag] = max(np.percentile(a, 99) for a in acts)
    assert meta["activation"]["rate_ceiling"] == {"max_rate_hz": 30.0, "weight": 10.0}
    assert rates["capped"] < 0.7 * rates["free"] and rates["capped"] < 45.0
    rc = cli.main(["train", "--arch", "tiny", "--dataset", "digits", "--rate-penalty", "2", "--activation", "softlif",
                   "--out", str(tmp_path / "x.pt")])
    assert rc == 2 and "--rate-penalty needs --max-rate" in capsys.readouterr().err


def test_softlif_rate_noise_is_added_in_training_only():
    m = SoftLIF(tau_rc=0.02, tau_ref=0.002, amplitude=0.02, smoothing=0.05, noise_hz=10.0).double()
    z = torch.full((20000,), 3.0, dtype=torch.float64)
    clean = m.curve.activation(z.numpy())
    m.train()
    noisy = m(z).detach().numpy()
    assert np.std(noisy / 0.02) == pytest.approx(10.0, rel=0.05)  # 10 Hz of rate noise
    assert np.mean(noisy) == pytest.approx(clean[0], abs=0.02 * 0.5)
    m.eval()  # no noise: the same torch arithmetic as a noiseless SoftLIF, bit for bit (torch's and
    # numpy's log/log1p may differ in the last bit on some CPUs, so the numpy curve is compared to 1e-12)
    quiet = SoftLIF(tau_rc=0.02, tau_ref=0.002, amplitude=0.02, smoothing=0.05, noise_hz=0.0).double().train()
    assert np.array_equal(m(z).detach().numpy(), quiet(z).detach().numpy())
    np.testing.assert_allclose(m(z).detach().numpy(), clean, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="noise_hz must be finite and >= 0"):
        SoftLIF(noise_hz=-1.0)
