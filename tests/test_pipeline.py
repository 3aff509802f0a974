"""The one conversion pipeline: spec validation, method table, source ANN in the .bcv, CLI on top."""

from __future__ import annotations

import numpy as np
import pytest
from brian2 import Hz, ms

from bioconv.pipeline import (METHODS, conversion, convert, load_source_ann, method, method_options, rates,
                              save_conversion)
from bioconv.pipeline_spec import ConversionSpec


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, mnist_dir):
    """An untrained (seeded) ``bn-cnn``-style tiny net with batch norm: conversion does not need training."""
    import torch

    from bioconv.ann import build_model
    from bioconv.ann.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model("4c3BN-p2-8c3-p2-10FC", (1, 28, 28), 10)
    with torch.no_grad():  # non-trivial BN statistics, so that folding matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(0.0, 0.2)
    model.eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny-bn.pt"
    save_checkpoint(model, {"arch": "custom", "spec": "4c3BN-p2-8c3-p2-10FC", "dataset": "mnist",
                            "input_shape": [1, 28, 28], "n_classes": 10, "test_accuracy": None}, path)
    return path


def test_spec_rejects_unknown_keys_naming_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown conversion spec key\(s\) \['tau_mem'\]; valid keys: method"):
        ConversionSpec.from_dict({"tau_mem": "20ms"})


def test_spec_parses_and_checks_units():
    spec = ConversionSpec.from_dict({"target_rate": "50Hz", "tau_m": "20ms", "refractory": "2ms", "dt": "0.1ms",
                                     "duration": "100ms", "neuron": "lif"})
    assert spec.target_rate == 50 * Hz and spec.refractory == 2 * ms and spec.dt == 0.1 * ms
    assert ConversionSpec.from_dict(spec.to_dict()) == spec
    assert spec.neuron_model().refractory == 2 * ms and spec.neuron_model().tau_m == 20 * ms
    with pytest.raises(ValueError, match="with a unit"):
        ConversionSpec.from_dict({"tau_m": 20})
    with pytest.raises(ValueError, match="time with a unit"):
        ConversionSpec.from_dict({"dt": "1Hz"})
    with pytest.raises(ValueError, match="exceeds 1/dt"):
        ConversionSpec(target_rate=2000 * Hz)
    with pytest.raises(ValueError, match="whole multiple of dt"):
        ConversionSpec(duration=10.5 * ms)
    with pytest.raises(ValueError, match="neuron must be one of"):
        ConversionSpec(neuron="hh")
    with pytest.raises(ValueError, match=r"schedule must be one of \('brian2', 'reset-first'\)"):
        ConversionSpec(schedule="resets-first")
    with pytest.raises(ValueError, match="calib_n"):
        ConversionSpec(calib_n=0)


def test_srm_takes_its_kernels_from_tau_syn_and_tau_r():
    spec = ConversionSpec(neuron="srm", tau_syn=5 * ms, tau_r=3 * ms)
    model = spec.neuron_model()
    assert model.tau_s == 5 * ms and model.tau_r == 3 * ms
    with pytest.raises(ValueError, match="PSP kernel"):
        ConversionSpec(neuron="srm", synapse="alpha")
    with pytest.raises(ValueError, match="no absolute refractory"):
        ConversionSpec(neuron="srm", refractory=2 * ms)
    assert ConversionSpec(synapse="alpha", tau_syn=5 * ms).synapse_model().tau_s == 5 * ms


def test_method_table_errors_and_defaults():
    with pytest.raises(ValueError, match="unknown normalization method 'foo'; choose one of mcr, mcr-tf, max, robust, spike"):
        method("foo")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['percentile'\] for method 'max'"):
        method_options(ConversionSpec(method="max", options={"percentile": 99.0}))
    assert method_options(ConversionSpec(method="robust"))["percentile"] == 99.9
    assert rates(ConversionSpec(method="mcr")) == (200 * Hz, 400 * Hz)
    assert rates(ConversionSpec(method="max", dt=2 * ms)) == (500 * Hz, 500 * Hz)
    assert set(METHODS) >= {"mcr", "max", "robust", "spike"}
    from bioconv.normalize.transfer import TransferOptions

    tf = method_options(ConversionSpec(method="mcr-tf"))  # the pipeline's defaults are MCR-TF's own
    assert {k: tf[k] for k in ("offset", "offset_sign", "iterations", "bins", "tolerance")} == {
        k: getattr(TransferOptions(), k) for k in ("offset", "offset_sign", "iterations", "bins", "tolerance")}


def test_measured_slopes_are_the_default_and_the_cli_can_turn_them_off():
    from bioconv import cli
    from bioconv.commands.convert import spec_from_args

    assert method_options(ConversionSpec(method="mcr"))["rho_from_slope"] is True
    assert method_options(ConversionSpec(method="mcr-tf"))["rho_from_slope"] is True
    parser = cli.build_parser()
    for flags, expected in (([], True), (["--no-rho-from-slope"], False), (["--rho-from-slope"], True)):
        args = parser.parse_args(["convert", "x.pt", "--norm", "mcr", *flags])
        assert method_options(spec_from_args(args))["rho_from_slope"] is expected, flags
    args = parser.parse_args(["convert", "x.pt", "--norm", "max", "--no-rho-from-slope"])
    with pytest.raises(ValueError, match="rho_from_slope"):
        method_options(spec_from_args(args))


def test_cli_slopes_per_channel_and_positive_offsets():
    from bioconv import cli
    from bioconv.commands.convert import spec_from_args

    parser = cli.build_parser()
    assert method_options(ConversionSpec(method="mcr"))["slopes"] == "layer"
    args = parser.parse_args(["convert", "x.pt", "--norm", "mcr", "--slopes", "channel"])
    assert method_options(spec_from_args(args))["slopes"] == "channel"
    assert method_options(ConversionSpec(method="mcr-tf"))["offset_sign"] == "positive"
    args = parser.parse_args(["convert", "x.pt", "--norm", "mcr-tf", "--tf-offset-sign", "any"])
    assert method_options(spec_from_args(args))["offset_sign"] == "any"
    for norm, flag in (("max", ["--slopes", "channel"]), ("mcr", ["--tf-offset-sign", "positive"])):
        args = parser.parse_args(["convert", "x.pt", "--norm", norm, *flag])
        with pytest.raises(ValueError, match="unknown option"):
            method_options(spec_from_args(args))


def test_convert_equals_the_normalizer_and_keeps_the_source_ann(ckpt, tmp_path):
    import torch

    from bioconv.ann import load_checkpoint
    from bioconv.data import load_dataset, subset
    from bioconv.graphio import load_graph
    from bioconv.normalize import activation_stats, robust_norm
    from bioconv.pipeline import ann_predictions, source_ann

    spec = ConversionSpec(method="robust", calib_n=50, calib_seed=3, options={"percentile": 99.0})
    result = conversion(spec, ckpt)
    ann, _ = source_ann(ckpt, "fold")
    calib = subset(load_dataset("mnist", "train"), 50, seed=3)
    ref = robust_norm(ann, activation_stats(ann, calib.images, percentiles=(99.0,)), percentile=99.0,
                      target_rate=1000 * Hz, input_rate=1000 * Hz, neuron=spec.neuron_model(),
                      synapse=spec.synapse_model())
    for a, b in zip(result.snn.layers, ref.layers):
        if hasattr(a, "weight"):
            np.testing.assert_array_equal(a.weight, b.weight)
            np.testing.assert_array_equal(a.bias, b.bias)
    assert result.snn.meta["conversion"] == spec.to_dict() and result.snn.meta["dataset"] == "mnist"
    path = save_conversion(result.snn, result.ann, tmp_path / "net.bcv")
    snn = load_graph(path)  # still a plain .bcv
    assert [l.name for l in snn.layers] == [l.name for l in result.snn.layers]
    stored = load_source_ann(path)
    test = load_dataset("mnist", "test").take(slice(0, 200))
    model, _ = load_checkpoint(ckpt)
    with torch.no_grad():
        torch_pred = model(torch.from_numpy(test.images).float()).argmax(1).numpy()
    np.testing.assert_array_equal(ann_predictions(stored, test.images), torch_pred)
    # the normalized graph's own forward pass is not the trained network when biases scale differently
    assert load_source_ann(tmp_path / "net.bcv") is not None
    save_graph_only = tmp_path / "plain.bcv"
    from bioconv.graphio import save_graph

    save_graph(snn, save_graph_only)
    assert load_source_ann(save_graph_only) is None
    # readable without torch (the brian2cuda environment has none)
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from bioconv.pipeline import load_source_ann\n"
            f"g = load_source_ann({str(path)!r}); print(len(g.layers))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) == len(stored.layers)


def test_mcr_convert_hits_the_target_on_the_calibration_images(ckpt):
    spec = ConversionSpec(method="mcr", calib_n=20, calib_sim=5, duration=50 * ms, target_rate=100 * Hz,
                          input_rate=200 * Hz)
    snn = convert(spec, ckpt)
    achieved = snn.meta["normalization"]["achieved_max_rate_hz"]
    assert achieved and all(abs(v / 100.0 - 1) <= 0.02 + 1e-9 for v in achieved.values()), achieved


def test_calibration_with_current_input_hits_the_target_under_current_input(ckpt):
    spec = ConversionSpec(method="mcr", coding="current", calib_n=20, calib_sim=5, duration=50 * ms,
                          target_rate=100 * Hz, input_rate=200 * Hz)
    snn = convert(spec, ckpt)
    assert snn.meta["normalization"]["calibration"]["sim"]["coding"] == "current"
    achieved = snn.meta["normalization"]["achieved_max_rate_hz"]
    assert achieved and all(abs(v / 100.0 - 1) <= 0.02 + 1e-9 for v in achieved.values()), achieved
    with pytest.raises(ValueError, match="coding must be one of"):
        ConversionSpec(coding="analog")


def test_cli_convert_exposes_neuron_parameters_and_simulate_reports_loss_against_the_source(ckpt, tmp_path, capsys):
    from bioconv.cli import main
    from bioconv.graphio import load_graph

    out = tmp_path / "lif.bcv"
    assert main(["convert", str(ckpt), "--norm", "max", "--neuron", "lif", "--tau-m", "20ms", "--refractory", "2ms",
                 "--synapse", "alpha", "--tau-syn", "5ms", "--schedule", "reset-first", "--calib", "30",
                 "--out", str(out)]) == 0
    graph = load_graph(out)
    assert graph.neuron.refractory == 2 * ms and graph.neuron.tau_m == 20 * ms and graph.synapse.tau_s == 5 * ms
    assert graph.schedule == "reset-first" and graph.meta["conversion"]["schedule"] == "reset-first"
    assert main(["convert", str(ckpt), "--norm", "max", "--neuron", "srm", "--tau-syn", "4ms", "--tau-r", "3ms",
                 "--calib", "30", "--out", str(tmp_path / "srm.bcv")]) == 0
    srm = load_graph(tmp_path / "srm.bcv").neuron
    assert srm.tau_s == 4 * ms and srm.tau_r == 3 * ms
    assert main(["convert", str(ckpt), "--norm", "max", "--percentile", "99", "--out", str(tmp_path / "x.bcv")]) == 2
    assert "its options: none" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["simulate", str(out), "--engine", "torch", "--n", "20", "--duration", "20ms"]) == 0
    text = capsys.readouterr().out
    assert "(source ANN)" in text and "conversion loss" in text
    assert main(["simulate", str(out), "--engine", "torch", "--n", "20", "--duration", "20ms",
                 "--readout", "count-voltage"]) == 0
    assert "count ties broken by the potential" in capsys.readouterr().out


def test_zoo_bn_cnn_folds_batch_norm_exactly(tmp_path, mnist_dir):
    """The zoo's batch-norm CNN: BN folded and pools folded, the source ANN predicts as torch does."""
    import torch

    from bioconv.ann import build_model
    from bioconv.ann.checkpoint import save_checkpoint
    from bioconv.ann.zoo import ZOO
    from bioconv.data import load_dataset
    from bioconv.pipeline import ann_predictions, source_ann

    assert "BN" in ZOO["bn-cnn"] and "p2" in ZOO["bn-cnn"]
    torch.manual_seed(1)
    model = build_model("bn-cnn", (1, 28, 28), 10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.2)
    model.eval()
    path = save_checkpoint(model, {"arch": "bn-cnn", "spec": ZOO["bn-cnn"], "dataset": "mnist",
                                   "input_shape": [1, 28, 28], "n_classes": 10}, tmp_path / "bn.pt")
    ann, _ = source_ann(path, "fold")
    x = load_dataset("mnist", "test").images[:100]
    with torch.no_grad():
        ref = model(torch.from_numpy(x).float()).argmax(1).numpy()
    np.testing.assert_array_equal(ann_predictions(ann, x), ref)
    assert [l.name for l in ann.spiking_layers] == ["conv1", "conv2", "conv3", "fc1", "fc2"]  # pools folded


@pytest.mark.parametrize("neuron,warns", [("srm", True), ("lif", True), ("if", False)])
def test_data_based_norm_warns_for_neurons_whose_rate_is_not_proportional(ckpt, caplog, neuron, warns):
    import logging

    spec = ConversionSpec(method="max", neuron=neuron, calib_n=20)
    with caplog.at_level(logging.WARNING, logger="bioconv.pipeline"):
        conversion(spec, ckpt)
    messages = [r.getMessage() for r in caplog.records if r.name == "bioconv.pipeline"]
    assert any("mcr-tf" in m and neuron.upper() in m for m in messages) == warns, messages
