r"""Brian2 engine: a Graph becomes a Brian2 network; whole datasets run through one compiled binary.

Exact update order (Brian2's schedule, one time step :math:`k`, :math:`t = k\,dt`), which
the torch engine mirrors:

1. ``start``: at image starts (:math:`k \bmod n_\mathrm{steps} = 0`) the monitors record
   (order −1), then every group's state (``v``; SRM ``y, psi, r``; alpha ``I_syn, x_syn``)
   is set to 0 and refractoriness ends (order 0), so every image starts from rest. With ``coding="current"`` layer 1's ``I_bias``
   becomes ``bias + τ·Σ_i w_ji·sign(x_i)·r_i`` for the image (current as extra bias).
2. ``groups``: exact state update of every layer (``exact_affine``). For IF the generated
   code is ``v = 1.0*I_bias*dt/tau + 1.0*v`` (+ ``I_syn`` terms for alpha synapses).
3. ``thresholds``: input neuron :math:`i` spikes iff the signed train of
   :func:`bioconv.encoding.spike_trains` is +1 at step :math:`k` (``<input>_neg`` iff −1);
   layer neurons spike iff ``v > theta`` (SRM: ``psi + r > theta``) using the state after 2.
4. ``synapses``: every spike of step :math:`k` is delivered in the same step:
   ``v_post += w`` (SRM ``y_post += e*w``; alpha ``x_syn_post += w/tau_s``), negative
   input spikes with ``-w``. A spike of layer :math:`l` at step :math:`k` can therefore make
   layer :math:`l+1` spike at step :math:`k+1` at the earliest (one step per layer).
5. ``resets``: spiking neurons reset (``v = 0`` or ``v -= theta``; SRM ``r -= 2*theta``)
   *after* receiving step :math:`k`'s input, so with reset to zero that input is lost.
   With the graph's ``schedule="reset-first"`` the network's ``schedule`` puts ``resets``
   before ``synapses`` (:func:`bioconv.models.brian2_schedule`) and that input is kept.

With a refractory period :math:`t_\mathrm{ref} > 0` (IF/LIF), a neuron that spiked at step
:math:`k_s` is refractory while :math:`(k - k_s)\,dt < t_\mathrm{ref}`: its state update (2)
is skipped, it cannot spike (3), and synaptic input (4) to an ``(unless refractory)`` state
(``v`` with delta synapses) is dropped, as Brian2 does (checked: spikes arriving at a
refractory neuron leave its ``v`` unchanged).

Compile once, run many: B images (``batch_size``) run back to back in one simulation of
B·T; weights, biases, thresholds and input trains are run parameters given to the binary on
its command line (``run_args``), so new batches and new parameter values never recompile.
``workers`` binaries run in parallel on different batches. Standalone builds are cached in
``.cache/brian/standalone/<key>`` by network structure, so a later process reuses them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import numpy as np
from brian2 import ms, second

from bioconv import devices, ir
from bioconv.engines.brian2_build import (Plan, build_network, input_arrays, parameter_arrays,
                                           placeholder_inputs)
from bioconv.engines.brian2_conv import effective_conv_mode
from bioconv.engines.brian2_conv import preflight as conv_preflight
from bioconv.simulation import POTENTIAL_READOUTS, SimConfig, SimResult, concat_results

log = logging.getLogger(__name__)

ENGINE = "brian2"
DEFAULT_BATCH = 50


def _array_of(owner: Any, var: str) -> np.ndarray:
    return np.asarray(owner.variables[var].get_value())


def _assemble(plan: Plan, arrays: dict[str, np.ndarray], n: int, labels: np.ndarray) -> SimResult:
    """Turn raw monitor arrays of one batch of ``plan.batch`` images into a SimResult of the first ``n``."""
    cfg, B, nb = plan.config, plan.batch, plan.config.n_bins
    counts = {}
    for layer in plan.layers:
        size = int(np.prod(layer.output_shape))
        rec = arrays[f"count:{layer.name}"].reshape(-1, size)
        final = arrays[f"final:{layer.name}:spike_count"].reshape(1, size)
        if rec.shape[0] != B:
            raise RuntimeError(f"expected {B} count records for {layer.name}, got {rec.shape[0]}")
        counts[layer.name] = np.diff(np.vstack([rec, final]).astype(np.int64), axis=0)[:n]
    n_out = int(np.prod(plan.output.output_shape))
    bins = np.vstack([arrays["bins"].reshape(-1, n_out),
                      arrays[f"final:{plan.output.name}:spike_count"].reshape(1, n_out)]).astype(np.int64)
    output_counts = (bins[1:].reshape(B, nb, n_out) - bins[0:B * nb:nb][:, None, :])[:n]
    output_v = None
    if cfg.readout in POTENTIAL_READOUTS:
        neuron = plan.graph.neuron_for(plan.output.name)
        if cfg.readout == "integrate":
            from bioconv.models import readout_neuron

            neuron = readout_neuron(neuron)
        finals = {v: arrays[f"final:{plan.output.name}:{v}"].reshape(1, n_out) for v in neuron.state_variables}
        last = finals["psi"] + finals["r"] if neuron.kind == "srm" else finals[neuron.psp_target]
        output_v = np.vstack([arrays["vbins"].reshape(-1, n_out), last])[1:].reshape(B, nb, n_out)[:n]
    spike_times = {}
    dt_s, dt_ms = float(cfg.dt / second), float(cfg.dt / ms)
    for name in cfg.record_times:
        i, t = arrays[f"spikes_i:{name}"].astype(np.int64), arrays[f"spikes_t:{name}"]
        step = np.rint(t / dt_s).astype(np.int64)
        img, keep = step // cfg.n_steps, step // cfg.n_steps < n
        spike_times[name] = (img[keep], i[keep], (step[keep] % cfg.n_steps) * dt_ms)
    bin_counts = {}
    for layer in plan.layers:  # population rate (Hz) per step -> spikes per step -> per bin
        size = int(np.prod(layer.output_shape))
        per_step = np.rint(arrays[f"pop:{layer.name}"] * (size * dt_s)).astype(np.int64)
        bin_counts[layer.name] = per_step.reshape(B, nb, cfg.steps_per_bin).sum(axis=2)[:n]
    return SimResult(ENGINE, cfg, counts, output_counts, np.asarray(labels)[:n], output_v, spike_times,
                     layer_bin_counts=bin_counts)


def runtime_batch(graph: ir.Graph, config: SimConfig, images: np.ndarray, labels: np.ndarray,
                  first_index: int, signed: bool, target: str = "numpy") -> SimResult:
    """Run one batch in Brian2 runtime mode (objects built afresh; no compile with numpy)."""
    devices.use_runtime(target)
    plan = Plan(graph, config, len(images), signed)
    values = {**parameter_arrays(plan), **input_arrays(plan, images, first_index)}
    built = build_network(plan, values)
    start = time.perf_counter()
    built.net.run(plan.batch * config.duration, namespace={})
    run_s = time.perf_counter() - start
    arrays = {name: _array_of(owner, var) for name, (owner, var) in built.outputs.items()}
    result = _assemble(plan, arrays, len(images), labels)
    return dataclasses.replace(result, timings={"run_s": run_s, "index_s": built.index_seconds},
                               meta={"n_synapses": built.n_synapses})


class Simulator:
    """A Brian2 network for one Graph structure that runs many batches (and parameter sets).

    Parameters
    ----------
    graph : Graph
        Converted graph (neuron and synapse models set).
    config : SimConfig
    device : "runtime", "cpp" or "cuda"
    workers : int
        Standalone binaries (cpp/cuda) or processes (runtime) run in parallel.
    build_dir : path, optional
        Standalone project directory (default: ``.cache/brian/<device>/<structure key>``).
    target : "numpy" or "cython"
        Code-generation target in runtime mode.
    batch_size : int, optional
        Images per simulation run (compiled into standalone binaries). Default
        ``min(50, n_images of the first run)``.
    signed : bool, optional
        Build the negative-input pathway; default: whether the first batch has negative pixels.
    profile : bool
        Standalone only: time every code object (``meta["profile_s"]``, CPU seconds summed
        over batches), e.g. to get the synaptic propagation time alone.
    conv : "procedural" or "explicit"
        Convolution synapses (:mod:`bioconv.engines.brian2_conv`): weight-shared, computed from
        the kernel and the layer geometry (default; cpp/cuda standalone only, runtime mode
        always unrolls) or unrolled into explicit ``Synapses``.
    """

    def __init__(self, graph: ir.Graph, config: SimConfig, device: str = "runtime", workers: int = 1,
                 build_dir: Optional[str | Path] = None, target: str = "numpy",
                 batch_size: Optional[int] = None, signed: Optional[bool] = None, profile: bool = False,
                 conv: str = "procedural") -> None:
        devices.check_device(device)
        self.conv = effective_conv_mode(conv, device)
        if int(workers) < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if target not in devices.TARGETS:
            raise ValueError(f"target must be one of {devices.TARGETS}, got {target!r}")
        self.graph, self.config, self.device, self.workers, self.target = graph, config, device, int(workers), target
        self.build_dir = None if build_dir is None else Path(build_dir)
        self.batch_size, self.signed, self.profile = batch_size, signed, bool(profile)
        self.plan: Optional[Plan] = None
        self.manifest: dict = {}
        self.build_timings: dict[str, float] = {}

    # ----------------------------------------------------------------- building
    def _ensure_plan(self, images: np.ndarray) -> None:
        signed = bool(self.signed) if self.signed is not None else bool((np.asarray(images) < 0).any())
        if self.plan is not None and (self.plan.signed or not signed):
            return
        if self.plan is not None:
            log.warning("images have negative pixels: rebuilding the network with signed input")
        batch = self.batch_size or min(DEFAULT_BATCH, len(images))
        conv_preflight(self.graph, self.conv, batch * self.config.n_steps, signed)
        self.plan = Plan(self.graph, self.config, int(batch), signed, self.conv)
        if self.device != "runtime":
            self._build_standalone()

    def build(self, signed: bool = False, compile: bool = True) -> Path:
        """Generate (and by default compile) the standalone project now; returns its directory.

        ``compile=False`` only generates the code (e.g. CUDA code on a machine without nvcc/GPU).
        """
        if self.device == "runtime":
            raise ValueError("build() is for device 'cpp' or 'cuda'; runtime mode builds nothing")
        self.signed = signed if self.signed is None else self.signed
        batch = self.batch_size or DEFAULT_BATCH
        self.plan = Plan(self.graph, self.config, int(batch), bool(self.signed), self.conv)
        conv_preflight(self.graph, self.conv, batch * self.config.n_steps, bool(self.signed))
        self._build_standalone(compile=compile)
        return self.directory

    def _build_standalone(self, compile: bool = True) -> None:
        plan = self.plan
        flags = devices.GCC_FLAGS if self.device == "cpp" else devices.NVCC_FLAGS
        key = plan.key(self.device, extra=[flags, "profile"] if self.profile else flags)
        directory = (self.build_dir or devices.standalone_dir(key, self.device)).resolve()
        manifest_path = directory / "bioconv_manifest.json"
        if compile and manifest_path.exists() and (directory / "main").exists():
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("key") == key:
                log.info("reusing compiled network in %s", directory)
                self.manifest, self.directory = manifest, directory
                self.build_timings = {"index_s": 0.0, "build_s": 0.0, "compile_s": 0.0}
                return
        directory.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        devices.begin_standalone(self.device, directory, conv_synapses=plan.conv == "procedural")
        try:
            # placeholder values: only shapes are compiled in; real values come as run arguments
            values = placeholder_inputs(plan)
            built = build_network(plan, values)
            built.net.run(plan.batch * plan.config.duration, namespace={}, profile=self.profile)
            build_s = time.perf_counter() - start
            compile_s = devices.build_standalone(directory, compile=compile)
            outputs = {}
            for name, (owner, var) in built.outputs.items():
                v = owner.variables[var]
                ncols = v.size[1] if isinstance(v.size, tuple) else None
                outputs[name] = {"file": devices.array_filename(v), "dtype": np.dtype(v.dtype).str, "ncols": ncols}
            params = {k: list(np.shape(a)) for k, a in {**parameter_arrays(plan), **values}.items()}
        finally:
            devices.end_standalone()
        self.manifest = {"key": key, "outputs": outputs, "params": params, "n_synapses": built.n_synapses,
                         "device": self.device, "compile_s": compile_s, "build_s": build_s}
        tmp = manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=1))
        tmp.replace(manifest_path)
        self.directory = directory
        self.build_timings = {"index_s": built.index_seconds, "build_s": build_s - built.index_seconds,
                              "compile_s": compile_s}
        log.info("built %s network in %s (%.1f s python, %.1f s compile)", self.device, directory, build_s, compile_s)

    # ----------------------------------------------------------------- running
    def _write(self, folder: Path, values: dict[str, np.ndarray]) -> list[str]:
        args = []
        for k, (name, arr) in enumerate(sorted(values.items())):
            expected = tuple(self.manifest["params"][name])
            if tuple(arr.shape) != expected:
                raise ValueError(f"run parameter {name} has shape {arr.shape}, the binary expects {expected}")
            path = folder / f"p{k}.dat"  # lower case: brian2cuda lower-cases argument values
            np.ascontiguousarray(arr, dtype=np.float64).tofile(path)
            args.append(f"{name}={path}")
        return args

    def _standalone_batch(self, param_args: list[str], images, labels, first_index: int,
                          graph: ir.Graph) -> tuple[SimResult, dict]:
        rid = uuid.uuid4().hex
        run_dir, results = self.directory / "runs" / rid, self.directory / "results" / rid
        run_dir.mkdir(parents=True)
        try:
            args = param_args + self._write(run_dir, input_arrays(self.plan, images, first_index, graph))
            info = devices.run_binary(self.directory, results, args)
            arrays = {}
            for name, spec in self.manifest["outputs"].items():
                data = np.fromfile(results / spec["file"], dtype=np.dtype(spec["dtype"]))
                arrays[name] = data.reshape(-1, spec["ncols"]) if spec["ncols"] else data
            if (results / "profiling_info.txt").exists():
                rows = (line.split("\t") for line in (results / "profiling_info.txt").read_text().splitlines())
                info["profile"] = {r[0]: float(r[1]) for r in rows if len(r) == 2}
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.rmtree(results, ignore_errors=True)
        return _assemble(self.plan, arrays, len(images), labels), info

    def run(self, images: np.ndarray, labels: np.ndarray, graph: Optional[ir.Graph] = None,
            first_index: int = 0, progress: bool = False) -> SimResult:
        """Simulate ``images`` (N, *input.shape); ``graph`` may carry new weights/biases/thresholds.

        ``first_index`` is the dataset index of ``images[0]`` (input trains are seeded per
        dataset index, see :mod:`bioconv.encoding`).
        """
        from tqdm.auto import tqdm

        images, labels = np.asarray(images), np.asarray(labels)
        if len(images) != len(labels) or len(images) == 0:
            raise ValueError(f"need as many labels as images (> 0), got {len(images)} and {len(labels)}")
        self._ensure_plan(images)
        plan, graph = self.plan, graph or self.graph
        B = plan.batch
        chunks = [(s, images[s:s + B], labels[s:s + B]) for s in range(0, len(images), B)]
        start = time.perf_counter()
        bar = tqdm(total=len(images), desc=f"brian2 {self.device}", unit="img", disable=not progress)
        infos = []
        if self.device == "runtime":
            results = self._run_runtime(graph, chunks, first_index, bar)
        else:
            rid = uuid.uuid4().hex
            pdir = self.directory / "runs" / f"params_{rid}"
            pdir.mkdir(parents=True)
            try:
                param_args = self._write(pdir, parameter_arrays(plan, graph))

                def task(chunk):
                    s, x, y = chunk
                    out = self._standalone_batch(param_args, x, y, first_index + s, graph)
                    bar.update(len(x))
                    return out

                with ThreadPoolExecutor(self.workers) as pool:
                    pairs = list(pool.map(task, chunks))
            finally:
                shutil.rmtree(pdir, ignore_errors=True)
            results, infos = [p[0] for p in pairs], [p[1] for p in pairs]
        bar.close()
        run_s = time.perf_counter() - start
        result = concat_results(results)
        n_syn = self.manifest.get("n_synapses") or result.meta.get("n_synapses")
        timings = {**self.build_timings, "run_s": run_s, "per_image_s": run_s / len(images)}
        if self.device == "runtime":
            timings["index_s"] = sum(r.timings.get("index_s", 0.0) for r in results)
        if infos:
            timings["binary_s"] = float(sum(i["seconds"] for i in infos))
            timings["binary_cpu_s"] = float(sum(i["cpu_seconds"] for i in infos))
            timings["network_s"] = float(sum(i["network_seconds"] for i in infos))
        meta = {"device": self.device, "target": self.target if self.device == "runtime" else None,
                "workers": self.workers, "batch_size": B, "signed": plan.signed, "n_synapses": n_syn,
                "build_dir": str(getattr(self, "directory", "")) or None,
                "max_rss_bytes": max((i["max_rss_bytes"] for i in infos), default=None),
                "reused_build": self.device != "runtime" and self.build_timings.get("compile_s") == 0.0,
                "original_compile_s": self.manifest.get("compile_s")}
        profiles = [i["profile"] for i in infos if "profile" in i]
        if profiles:
            meta["profile_s"] = {k: float(sum(p.get(k, 0.0) for p in profiles)) for k in profiles[0]}
        return dataclasses.replace(result, timings=timings, meta=meta)

    def _run_runtime(self, graph, chunks, first_index, bar) -> list[SimResult]:
        args = [(graph, self.config, x, y, first_index + s, self.plan.signed, self.target) for s, x, y in chunks]
        if self.workers == 1:
            out = []
            for a in args:
                out.append(runtime_batch(*a))
                bar.update(len(a[2]))
            return out
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(runtime_batch, *a) for a in args]
            out = []
            for f, a in zip(futures, args):
                out.append(f.result())
                bar.update(len(a[2]))
            return out


def simulate(graph: ir.Graph, images: np.ndarray, labels: np.ndarray, config: SimConfig,
             device: str = "runtime", workers: int = 1, target: str = "numpy",
             build_dir: Optional[str | Path] = None, batch_size: Optional[int] = None,
             first_index: int = 0, progress: bool = False, signed: Optional[bool] = None,
             conv: str = "procedural") -> SimResult:
    """Simulate ``images`` through ``graph`` with Brian2; see :class:`Simulator`."""
    sim = Simulator(graph, config, device=device, workers=workers, build_dir=build_dir, target=target,
                    batch_size=batch_size, signed=signed, conv=conv)
    return sim.run(images, labels, first_index=first_index, progress=progress)
