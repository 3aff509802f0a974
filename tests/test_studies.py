"""Study infrastructure (cached sweeps, resume, executors, figures) and every study's --quick run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bioconv.sweep import ResultCache, config_hash, run_sweep


def _toy_run(cfg: dict) -> pd.DataFrame:
    """A deterministic toy study; logs each call to ``cfg['log']`` and fails on ``cfg['fail']``."""
    if cfg.get("log"):
        with open(cfg["log"], "a") as fh:
            fh.write(f"{cfg['x']}\n")
    if cfg.get("fail") == cfg["x"]:
        raise RuntimeError(f"simulated crash at x={cfg['x']}")
    rng = np.random.default_rng([cfg["seed"], cfg["x"]])
    return pd.DataFrame({"sample": np.arange(3), "layer": "l1", "value": rng.normal(size=3) + cfg["x"]})


def _grid(tmp_path: Path, n: int = 4, **extra) -> list[dict]:
    return [{"x": x, "seed": 7, "log": str(tmp_path / "calls.log"), **extra} for x in range(n)]


def _calls(tmp_path: Path) -> list[int]:
    path = tmp_path / "calls.log"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_config_hash_is_canonical():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    with pytest.raises(ValueError, match="JSON"):
        config_hash({"a": object()})


def test_cache_hit_skips_recompute(tmp_path):
    first = run_sweep("toy", _grid(tmp_path), _toy_run, tmp_path / "out", progress=False)
    assert sorted(_calls(tmp_path)) == [0, 1, 2, 3]
    again = run_sweep("toy", _grid(tmp_path), _toy_run, tmp_path / "out", progress=False)
    assert sorted(_calls(tmp_path)) == [0, 1, 2, 3]  # nothing recomputed
    pd.testing.assert_frame_equal(first, again)
    more = run_sweep("toy", _grid(tmp_path, 5), _toy_run, tmp_path / "out", progress=False)
    assert sorted(_calls(tmp_path)) == [0, 1, 2, 3, 4]  # only the new config ran
    assert len(more) == 15 and set(more.x) == {0, 1, 2, 3, 4}
    meta = json.loads(ResultCache(tmp_path / "out", "toy").paths(_grid(tmp_path)[0])[1].read_text())
    assert meta["config"]["x"] == 0 and meta["seed"] == 7 and "git_commit" in meta and "versions" in meta
    assert "git_dirty" in meta and meta["versions"]["pandas"] == pd.__version__


def test_killed_sweep_resumes_without_corruption(tmp_path):
    crashing = _grid(tmp_path, 5, fail=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_sweep("toy", crashing, _toy_run, tmp_path / "out", progress=False)
    folder = tmp_path / "out" / "toy"
    assert not list(folder.glob("*.tmp")), "no temporary files may be left behind"
    assert len(list(folder.glob("*.parquet"))) == 2 and len(list(folder.glob("*.json"))) == 2
    # a half-written result (parquet without its JSON) counts as missing and is redone
    cache = ResultCache(tmp_path / "out", "toy")
    cache.paths(crashing[1])[1].unlink()
    fixed = [{**c, "fail": None} for c in crashing]
    # the 'fail' key changes the hash, so resume with the original configs and a fixed function
    table = run_sweep("toy", crashing, _fixed_run, tmp_path / "out", progress=False)
    assert sorted(_calls(tmp_path)) == [0, 1, 1, 2, 2, 3, 4]  # 0 kept; 1 redone; 2-4 run once more
    ref = run_sweep("ref", fixed, _toy_run, tmp_path / "ref", progress=False)
    np.testing.assert_array_equal(table.value.to_numpy(), ref.value.to_numpy())


def _fixed_run(cfg: dict) -> pd.DataFrame:
    return _toy_run({**cfg, "fail": None})


def test_rerun_is_bit_identical_with_same_seed(tmp_path):
    from studies import response_curves

    cfg = {**response_curves.grid(quick=True)[1], "n_points": 11, "duration_ms": 60.0}
    a = run_sweep("rc", [cfg], response_curves.run_one, tmp_path / "a", progress=False)
    b = run_sweep("rc", [cfg], response_curves.run_one, tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert cfg["sigma"] > 0 and a.rate_hz.sum() > 0  # noisy drive: the seed matters
    c = run_sweep("rc", [{**cfg, "seed": 1}], response_curves.run_one, tmp_path / "c", progress=False)
    assert not np.array_equal(a.rate_hz.to_numpy(), c.rate_hz.to_numpy())


def test_process_pool_matches_serial(tmp_path):
    serial = run_sweep("toy", _grid(tmp_path), _toy_run, tmp_path / "s", progress=False)
    pooled = run_sweep("toy", _grid(tmp_path), _toy_run, tmp_path / "p", workers=2, progress=False)
    pd.testing.assert_frame_equal(serial, pooled, check_exact=True)


def test_dask_local_cluster_on_loopback(tmp_path):
    pytest.importorskip("distributed", reason="dask executor needs distributed (pip install -e '.[dask]')")
    serial = run_sweep("toy", _grid(tmp_path), _toy_run, tmp_path / "s", progress=False)
    dasked = run_sweep("toy", _grid(tmp_path), _toy_run, tmp_path / "d", executor="dask", workers=1, progress=False)
    pd.testing.assert_frame_equal(serial, dasked, check_exact=True)
    assert len(list((tmp_path / "d" / "toy").glob("*.json"))) == 4


def test_bad_executor_and_bad_result(tmp_path):
    with pytest.raises(ValueError, match="executor"):
        run_sweep("toy", _grid(tmp_path), _toy_run, tmp_path, executor="mpi", progress=False)
    with pytest.raises(ValueError, match="DataFrame"):
        run_sweep("toy", _grid(tmp_path, 1), _not_a_table, tmp_path, progress=False)


def _not_a_table(cfg: dict):
    return [1, 2, 3]


def test_potential_readouts_predict_from_the_output_potential_not_from_counts():
    from brian2 import ms

    from bioconv.simulation import SimConfig, SimResult
    from studies.metrics import predictions_vs_time

    counts = np.zeros((2, 1, 3), dtype=np.int64)  # an integrating output layer never spikes
    v = np.array([[[0.1, 0.7, 0.2]], [[0.9, 0.0, 0.3]]])
    for readout in ("integrate", "voltage"):
        result = SimResult("torch", SimConfig(duration=10 * ms, readout=readout), {"out": np.zeros((2, 3))},
                           counts, np.array([1, 0]), output_v=v)
        np.testing.assert_array_equal(predictions_vs_time(result)[:, -1], [1, 0])
    result = SimResult("torch", SimConfig(duration=10 * ms), {"out": np.zeros((2, 3))}, counts, np.array([1, 0]))
    np.testing.assert_array_equal(predictions_vs_time(result)[:, -1], [-1, -1])  # count readout: silent = wrong


def test_summarize_counts_ties_by_each_readouts_rule():
    """tie_fraction: ties of the top count (count readout); ties of count and potential (count-voltage)."""
    from brian2 import ms

    from bioconv.data import load_dataset
    from bioconv.engines import torch as te
    from bioconv.neurons import IF
    from bioconv.simulation import SimConfig
    from bioconv.stats import count_predictions, count_voltage_predictions, tie_fraction
    from bioconv.synapses import Delta
    from engine_helpers import random_graph, scale_to_spike
    from studies.metrics import summarize

    ds = load_dataset("mnist", "test")
    x, y = ds.images[:6], ds.labels[:6]
    graph = scale_to_spike(random_graph("tiny", seed=3), x, target=0.8).with_models(neuron=IF(), synapse=Delta())
    for readout in ("count", "count-voltage"):
        res = te.simulate(graph, x, y, SimConfig(duration=20 * ms, bin=10 * ms, readout=readout), progress=False)
        table = summarize(res, graph, x)
        counts = res.output_counts[:, -1]
        pred = count_predictions(counts) if readout == "count" else count_voltage_predictions(counts, res.output_v[:, -1])
        expected = tie_fraction(counts) if readout == "count" else float((pred < 0).mean())
        assert table.tie_fraction.iloc[0] == pytest.approx(expected)
        np.testing.assert_array_equal(table[table.layer == "input"].prediction.to_numpy(), pred)
    assert tie_fraction(counts) > 0  # 20 ms leaves ties of the count: the count-voltage rule decides them


def test_test_images_offset_gives_disjoint_images():
    from studies import common

    cfg = {"dataset": "mnist", "n_images": 5}
    x0, y0 = common.test_images(cfg)
    x1, y1 = common.test_images({**cfg, "image_offset": 3})
    np.testing.assert_array_equal(x1[:2], x0[3:])  # the offset shifts the window by 3 images
    np.testing.assert_array_equal(y1[:2], y0[3:])
    assert len(x1) == 5
    with pytest.raises(ValueError, match="image_offset"):
        common.test_images({**cfg, "image_offset": 9999})


def test_latency_definition():
    """Time to a stable decision per image; no latency for a network that does not classify."""
    from studies.metrics import decision_times_ms, first_spike_ms, latency_ms

    t = np.arange(1.0, 7.0)
    pred = np.array([[-1, 3, 3, 3, 3, 3],    # decided at 2 ms
                     [-1, 2, 5, 2, 5, 5],    # flips until 5 ms
                     [1, 1, 1, 1, 1, -1],    # undecided (tie or silence) at T
                     [4, 4, 4, 4, 4, 4]])    # decided at the first bin
    d = decision_times_ms(pred, t)
    np.testing.assert_array_equal(d[[0, 1, 3]], [2.0, 5.0, 1.0])
    assert np.isnan(d[2])
    counts = np.zeros((2, 6, 3))
    counts[0, 3:, 1] = 1
    f = first_spike_ms(counts, t)
    assert f[0] == 4.0 and np.isnan(f[1])
    correct = np.ones(100, bool)
    assert latency_ms(np.full(100, 7.0), correct, 10) == 7.0
    chance = np.r_[np.ones(10, bool), np.zeros(90, bool)]  # 10 % on 10 classes: never classifies
    assert np.isnan(latency_ms(np.full(100, 1.0), chance, 10))


def test_response_curve_if_subtract_is_relu():
    """Constant drive through a delta synapse: IF-sub fires exactly at x/τ, IF-zero below it."""
    from studies import response_curves

    base = {**response_curves.grid(quick=True)[0], "n_points": 5, "duration_ms": 120.0}
    sub = response_curves.run_one({**base, "neuron": "IF-sub"})
    zero = response_curves.run_one({**base, "neuron": "IF-zero"})
    np.testing.assert_allclose(sub.rate_hz, sub.relu_hz, atol=1000 / 100 + 1e-9)  # one spike in 100 ms
    assert np.all(zero.rate_hz.to_numpy()[1:] < zero.relu_hz.to_numpy()[1:])  # the IF-zero gap
    lif = response_curves.lif_analytic_hz(np.array([0.0, 0.05, 0.5]))
    assert lif[0] == 0 and lif[1] == 0 and lif[2] == pytest.approx(1000 / (20 * np.log(10 / 9)))


@pytest.mark.slow
def test_response_curves_quick_writes_figure(tmp_path):
    from bioconv.cli import main

    assert main(["study", "response_curves", "--quick", "--out", str(tmp_path / "out"),
                 "--figures", str(tmp_path / "fig")]) == 0
    names = {p.name for p in (tmp_path / "fig").iterdir()}
    assert {"fig1_response_curves.pdf", "fig1_response_curves.png", "fig1_response_curves.csv"} <= names
    assert (tmp_path / "fig" / "fig1_response_curves.pdf").read_bytes()[:4] == b"%PDF"
    data = pd.read_csv(tmp_path / "fig" / "fig1_response_curves.csv")
    assert set(data.drive) == {"current", "noise"} and data.rate_hz.max() > 0
    assert (tmp_path / "out" / "response_curves-quick.parquet").exists()


NETWORK_STUDIES = ["rate_degeneration", "norm_comparison", "rate_range", "convergence",
                   "accuracy_table", "neuron_models", "dt_fidelity", "conversion_acceptance", "plausibility",
                   "model_fidelity", "dt_convergence"]  # lif_training: its own test (SoftLIF networks)


@pytest.fixture(scope="module")
def quick_env(tmp_path_factory, mnist_dir):
    """One result folder for all network studies (shared conversion cache) and the quick
    ``tiny`` checkpoint trained on the fly, as on a fresh CI machine."""
    out = tmp_path_factory.mktemp("studies")
    from studies.common import quick_checkpoint

    (out / "_cache").mkdir()
    ckpt = quick_checkpoint("mnist", cache=out / "_cache")
    yield out, ckpt


@pytest.mark.slow
@pytest.mark.parametrize("name", NETWORK_STUDIES)
def test_network_study_quick_end_to_end(name, quick_env):
    from bioconv.commands.study import run_study

    out, ckpt = quick_env
    paths = run_study(name, quick=True, ckpt=str(ckpt), out=out, figures=out / "fig")
    exts = {p.suffix for p in paths}
    assert {".pdf", ".png", ".csv"} <= exts, paths
    for p in paths:
        assert p.exists() and p.stat().st_size > 0
    table = pd.read_parquet(out / f"{name}-quick.parquet")
    assert len(table) > 0 and "config_hash" in table
    layer_rows = table[table.kind == "layer"]
    assert layer_rows.snn_accuracy.between(0, 1).all() and (layer_rows.spikes_per_image > 0).all()
    assert (layer_rows.synops_per_image > layer_rows.spikes_per_image).all()
    assert set(table.ckpt) == {str(ckpt)} or all(str(ckpt).endswith(c) for c in set(table.ckpt))


@pytest.mark.slow
def test_conversion_acceptance_checks_calibration_rates_and_matches_spikes(quick_env):
    """Conversion acceptance: MCR's calibration max rates re-measured in Brian2 are within ±2 %; spikes vs time add up."""
    from bioconv.commands.study import run_study
    from studies import conversion_acceptance as ca

    out, ckpt = quick_env
    run_study("conversion_acceptance", quick=True, ckpt=str(ckpt), out=out, figures=out / "fig")  # cached
    table = pd.read_parquet(out / "conversion_acceptance-quick.parquet")
    calib = table[(table.kind == "calib") & (table.method == "mcr")]
    assert len(calib) == 6 and not calib.layer.str.startswith("pool").any()  # 2 variants × 3 layers; pools folded
    assert (abs(calib.max_rate_hz / calib.target_rate_hz - 1) <= 0.02).all(), calib
    table = table.assign(variant=ca.variant(table))
    times = table[table.kind == "time"]
    for name, g in times.groupby("variant"):
        assert g.spikes_to_t.is_monotonic_increasing
        layer_rows = table[(table.kind == "layer") & (table.variant == name) & (table.layer != "input")]
        assert g.spikes_to_t.iloc[-1] == pytest.approx(layer_rows.groupby("image").spikes.sum().mean())
    summary = ca.summary(table).set_index("variant")
    assert set(summary.index) == {"mcr", "mcr-slope", "max", "robust"}
    assert summary.loc["mcr", "calib_within_tolerance"] and summary.loc["mcr-slope", "calib_within_tolerance"]
    matched = ca.matched_spikes(table)
    assert set(matched.columns) >= {"accuracy_level", "variant", "t_ms", "spikes_per_image"}


@pytest.mark.slow
def test_network_run_one_is_bit_identical(quick_env):
    """Same config, same seed → the same table, bit for bit (conversion cached, simulation redone)."""
    from studies import common, convergence

    out, ckpt = quick_env
    cfg = {**convergence.grid(quick=True)[1], "n_images": 20, "duration_ms": 50.0, "_cache_dir": str(out / "_cache")}
    common.set_checkpoint(cfg, str(ckpt))
    a = convergence.run_one(cfg)
    b = convergence.run_one(cfg)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    c = convergence.run_one({**cfg, "seed": 3})
    assert not np.array_equal(a.spikes.to_numpy(), c.spikes.to_numpy())


@pytest.mark.slow
def test_tables_carry_intervals_seeds_and_tie_rule(quick_env):
    """Network tables: per-image correctness with ties counted wrong, Wilson CI, n and seeds; Table 3 has McNemar p."""
    from bioconv.commands.study import run_study
    from bioconv.stats import count_predictions  # noqa: F401  (the documented tie rule)

    out, ckpt = quick_env
    run_study("accuracy_table", quick=True, ckpt=str(ckpt), out=out, figures=out / "fig")  # cached by then
    table = pd.read_parquet(out / "accuracy_table-quick.parquet")
    layer = table[table.kind == "layer"]
    assert (layer.snn_ci_low <= layer.snn_accuracy).all() and (layer.snn_accuracy <= layer.snn_ci_high).all()
    assert {"n_images", "n_seeds", "tie_fraction", "mcnemar_p", "decision_ms", "seed"} <= set(table.columns)
    t3 = pd.read_csv(out / "fig" / "table3_accuracy.csv")
    assert any(c.startswith("McNemar p vs MCR") for c in t3.columns) and "Seeds" in t3
    assert t3.loc[t3.Method != "mcr", [c for c in t3.columns if c.startswith("McNemar")]].notna().all().all()


@pytest.mark.slow
def test_plausibility_reports_rates_irregularity_and_latency(quick_env):
    from bioconv.commands.study import run_study
    from studies import plausibility

    out, ckpt = quick_env
    run_study("plausibility", quick=True, ckpt=str(ckpt), out=out, figures=out / "fig")
    table = pd.read_parquet(out / "plausibility-quick.parquet")
    s = plausibility.summary(table)
    assert {"IF-zero", "LIF-ref2"} == set(s.neuron) and "input" in set(s.layer)
    assert s.frac_silent.between(0, 1).all() and (s.p95_rate_hz >= s.median_rate_hz).all()
    spiking = s[s.layer != "input"]
    assert (spiking.layer_max_rate_hz <= spiking.rate_hz * 2).all()  # calibrated rates, not 1/dt
    assert spiking.cv_isi_median.dropna().between(0, 5).all() and spiking.fano_median.dropna().ge(0).all()
    raster = table[table.kind == "raster"]
    assert {"input"} < set(raster.layer)
    sweep = plausibility.sweep_summary(table)
    assert (sweep.ci_low <= sweep.accuracy).all() and set(sweep.t_ms) == {250.0}


@pytest.mark.slow
def test_model_fidelity_compares_mcr_and_mcr_tf_on_the_same_images(quick_env):
    from bioconv.commands.study import run_study
    from studies import model_fidelity

    out, ckpt = quick_env
    run_study("model_fidelity", quick=True, ckpt=str(ckpt), out=out, figures=out / "fig")
    table = pd.read_parquet(out / "model_fidelity-quick.parquet")
    s = model_fidelity.summary(table)
    lif = s[s.neuron == "LIF-ref2"]
    # variants: slopes assumed / measured; the MCR-TF conversion once more, recording the layer responses
    assert set(lif.method) == {"mcr", "mcr-tf", "mcr-slope", "mcr-tf-response"} and len(lif) == 4
    same = lif.set_index("method").loc[["mcr-tf", "mcr-tf-response"], ["snn_accuracy", "loss_pct"]]
    np.testing.assert_array_equal(same.iloc[0], same.iloc[1])  # the same conversion, seeds and images
    srm = s[s.neuron != "LIF-ref2"]  # the SRM τ_r sweep: the pipeline's default only
    assert list(srm.method) == ["mcr-tf-slope"] and srm.tau_r_ms.tolist() == [10.0] and lif.tau_r_ms.isna().all()
    assert (out / "fig" / "fig11_model_fidelity.pdf").exists()
    resp = model_fidelity.response_summary(table)
    assert set(resp.layer) == {l for l in set(table[table.kind == "layer"].layer) if l != "input"}
    assert (resp.ideal_rate_hz > 0).all()  # ANN-active neurons only; test activations may exceed λ (last bin)
    assert resp.groupby("layer").ideal_rate_hz.apply(lambda v: v.is_monotonic_increasing).all()
    assert (resp.mean_rate_hz >= 0).all() and resp.silent_rate_hz.notna().all()
    pd.testing.assert_frame_equal(pd.read_csv(out / "fig" / "fig11b_layer_response.csv")[["layer", "n"]],
                                  resp[["layer", "n"]].reset_index(drop=True), check_dtype=False)
    for col in ("snn_accuracy", "snn_ci_low", "snn_ci_high", "ann_accuracy", "loss_pct", "mcnemar_p"):
        assert s[col].notna().all(), col
    assert (s.snn_ci_low <= s.snn_accuracy).all() and (s.snn_accuracy <= s.snn_ci_high).all()
    np.testing.assert_allclose(s.loss_pct, 100 * (s.ann_accuracy - s.snn_accuracy))
    assert any(c.startswith("max_hz_") for c in s.columns)


def test_model_fidelity_full_grid_has_the_lif_with_reset_by_subtraction():
    from brian2 import ms
    from studies import common, model_fidelity

    full = model_fidelity.grid(quick=False)
    sub = [c for c in full if c["neuron"] == "LIF-sub-ref2" and not c.get("response") and "image_offset" not in c]
    responses = {(c["neuron"], c["synapse"]) for c in full if c.get("response")}
    assert responses == set(model_fidelity.RESPONSE)
    held = [c for c in full if c.get("variant") == "mcr-tf-slope-cv-heldout"]
    assert {(c["neuron"], c["synapse"]) for c in held} == set(model_fidelity.HELD_OUT)
    assert all((c["image_offset"], c["n_images"]) == model_fidelity.HELD_OUT_IMAGES and c["image_offset"] >= 1000
               and c["readout"] == "count-voltage" for c in held)  # disjoint from the first 1000 images
    runs = {(c["rate_hz"], c["synapse"], c.get("variant", c["method"]), c.get("readout", "count")) for c in sub}
    assert runs == {(rate, syn, variant, "count-voltage" if variant.endswith("-cv") else "count")
                    for rate, _, _, syn in model_fidelity.RESET_SUBTRACT for variant in model_fidelity.RESET_SUBTRACT_VARIANTS}
    assert len(sub) == len(runs) * len(common.seeds(False))
    spec = common.conversion_spec(sub[0])
    assert spec.neuron == "lif" and spec.reset == "subtract" and abs(float(spec.refractory / ms) - 2.0) < 1e-12
    cv = next(c for c in sub if c.get("variant") == "mcr-tf-slope-cv")
    base = next(c for c in sub if c.get("variant") == "mcr-tf-slope" and c["synapse"] == cv["synapse"]
                and c["rate_hz"] == cv["rate_hz"])
    assert common.conversion_spec(cv) == common.conversion_spec(base)  # one conversion, read two ways


@pytest.mark.slow
def test_dt_convergence_reports_rate_changes_from_the_calibration_dt(quick_env):
    from bioconv.commands.study import run_study
    from studies import dt_convergence

    out, ckpt = quick_env
    run_study("dt_convergence", quick=True, ckpt=str(ckpt), out=out, figures=out / "fig")
    table = pd.read_parquet(out / "dt_convergence-quick.parquet")
    rates = dt_convergence.layer_summary(table)
    assert set(rates.schedule) == {"brian2", "reset-first"}
    at_cal = np.isclose(rates.sim_dt_ms, rates.cal_dt_ms)
    assert at_cal.any() and (~at_cal).any()
    np.testing.assert_allclose(rates.loc[at_cal, ["max_rate_change_pct", "mean_rate_change_pct"]], 0.0)
    assert rates.loc[~at_cal, "mean_rate_change_pct"].notna().all()
    acc = dt_convergence.accuracy(table)
    assert len(acc) == len(rates[["schedule", "cal_dt_ms", "sim_dt_ms"]].drop_duplicates())
    assert (acc.snn_ci_low <= acc.snn_accuracy + 1e-12).all()


@pytest.mark.slow
def test_lif_training_converts_softlif_networks_without_fitting(quick_env):
    from bioconv.commands.study import run_study
    from studies import lif_training

    out, _relu_ckpt = quick_env  # this study trains its own (quick) SoftLIF networks
    run_study("lif_training", quick=True, out=out, figures=out / "fig")
    table = pd.read_parquet(out / "lif_training-quick.parquet")
    assert set(table.method) == {"lif-rate"} and set(table.neuron) == {"LIF-ref2"}
    s = lif_training.summary(table)
    capped = [(n, syn) for n in ("ceiling50", "ceiling50-noise") for syn in ("alpha", "alpha", "delta")]
    assert sorted(zip(s.network, s.synapse)) == capped + [("scale10", "alpha"), ("scale10", "delta"),
                                                          ("scale50", "alpha"), ("scale50", "delta")]
    assert sorted(s[s.network == "ceiling50"].input_rate_hz) == [100.0, 100.0, 400.0]
    for col in ("snn_accuracy", "snn_ci_low", "snn_ci_high", "ann_accuracy", "loss_pct", "mcnemar_p"):
        assert s[col].notna().all(), col
    assert (s.snn_ci_low <= s.snn_accuracy).all() and (s.snn_accuracy <= s.snn_ci_high).all()
    assert (s.ann_accuracy > 0.3).all()  # the quick SoftLIF nets learn
    assert (out / "fig" / "fig13_lif_training.pdf").exists()
