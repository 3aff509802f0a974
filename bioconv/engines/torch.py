r"""Torch engine: a batched, clock-driven mirror of the Brian2 networks.

Every spiking layer of a :class:`~bioconv.ir.Graph` is a batch of neurons (images ×
neurons) whose synaptic input comes either from weight-shared ``conv2d`` / ``linear``
(``torch.nn.functional``) or from per-spike synapse tables (below). Neuron and synapse
models, their exact integration and the graph's schedule (Brian2's order groups →
thresholds → synapses → resets, or ``"reset-first"``) are in
:mod:`bioconv.engines.torch_models`, where the formulae and the residual float differences
to Brian2 are documented.

Timing (the same as Brian2's): the spikes of layer :math:`n` at step :math:`t` (its
threshold in step :math:`t`) reach layer :math:`n+1` in the synapse slot of step
:math:`t`, i.e. after layer :math:`n+1`'s own threshold check, so each layer adds one
step of delay. Input spike train row :math:`t` (:func:`bioconv.encoding.spike_trains`,
same seed rule, so identical trains in both engines) is delivered to layer 1 at step
:math:`t` in the same way. Because the network is feed-forward, the engine runs
*layer by layer over all time steps* (spikes stored time-major, (T, B, n)): the synaptic
input of a layer is prepared for a chunk of steps at once, followed by the per-step neuron
updates; this is exactly the step-by-step result. Three ways to compute the input
(``propagation``):

* ``"event"``: every presynaptic spike adds its outgoing weights to the target
  state with ``index_add_``, one by one in Brian2's order (by presynaptic index, positive
  input pathway before ``<input>_neg``), so float64 CPU sums are Brian2's bit for bit;
* ``"dense"``: ``conv2d``/``linear`` of the (steps × images) spike maps (float32 / GPU);
  pools still propagate events;
* ``"fused"`` (CPU; every neuron/synapse model, refractoriness, current input, the gated
  max-pool, spike-time recording, residual and concatenated graphs): the event additions of ``"event"`` in a compiled loop
  over images × steps × layers whose per-model code is generated from the models layer
  (:mod:`bioconv.engines.fused`), bit-identical to ``"event"`` in float64;
* ``"auto"`` (default): ``"fused"`` on the CPU unless :func:`bioconv.engines.fused.unsupported`
  names a reason (e.g. current input that feeds more than the first layer), else ``"event"``.

Graphs with several inputs per layer (:class:`~bioconv.ir.Add`, :class:`~bioconv.ir.Concat`)
run population by population in topological order; a population's input is the sum of its
projections (:mod:`bioconv.projections`), delivered in that order (Brian2's order too).

``coding="current"``: no input spikes; layer 1 receives the constant current
:math:`\sum_i w_{ji}\,\mathrm{sign}(x_i) r_i` (:func:`bioconv.encoding.input_current`),
added to its bias as :math:`I_\mathrm{bias} + \tau I` (τ the neuron's reference time).

Max pooling is the gated max-pool of :class:`bioconv.connectivity.GatedMaxPool`: each pool
unit passes a spike of a window member whose spike count equals the window's running
maximum, and the pool unit is a relay (state 1 per passed spike, fires when > 0.5, reset to
0; see :class:`bioconv.ir.MaxPool2d`), whatever the neuron model.

The per-population plans (models, thresholds, biases, weights or synapse tables) are built
by :mod:`bioconv.engines.torch_plan`; this module runs them.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal, Optional, Sequence

import numpy as np
import torch
from brian2 import ms, second
from tqdm.auto import tqdm

from bioconv import encoding, ir
from bioconv.engines import torch_models as tm
from bioconv.engines.torch_plan import LayerPlan, Propagation, compile_graph
from bioconv.simulation import POTENTIAL_READOUTS, SimConfig, SimResult

log = logging.getLogger(__name__)

DType = Literal["float32", "float64"]
PROPAGATIONS = ("auto", "event", "dense", "fused")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
CHUNK_ELEMENTS = 1 << 23  # max elements of one drive chunk (images × steps × neurons)


def _events(targets: torch.Tensor, table: torch.Tensor, n: int, b: torch.Tensor, i: torch.Tensor,
            sign: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Synaptic events (flat targets into (B, n), weights) of presynaptic spikes (image b, neuron i)."""
    flat = (targets[i] + (b * n)[:, None]).reshape(-1)
    weights = table[i]
    if sign is not None:
        weights = weights * sign[:, None]
    return flat, weights.reshape(-1)


def _gated_pool(layer: ir.MaxPool2d, spikes: torch.Tensor, counts: torch.Tensor, cmax: torch.Tensor) -> torch.Tensor:
    """One step of the count-gated max-pool; updates ``counts`` (B,C,H,W) and ``cmax`` (B,n) in place."""
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    _, ho, wo = layer.output_shape
    s = spikes > 0
    win = lambda a: a.unfold(2, kh, sh).unfold(3, kw, sw)[:, :, :ho, :wo].reshape(a.shape[0], -1, kh * kw)  # noqa: E731
    passed = (win(s) & (win(counts) == cmax[..., None])).any(-1)
    cmax += passed
    counts += s
    return passed


def _run_relay_pool(plan: LayerPlan, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The max-pool relay (:data:`bioconv.models.dynamics.RELAY` in the graph's schedule, ``plan.prop``).

    A passed spike sets v = 1 (synapse slot), spike when v > 0.5, reset v = 0. So the pool
    unit fires at step t+1 for a spike passed at step t, whatever the graph's neuron model;
    in Brian2's order a reset in step t also wipes a spike passed in step t, with
    ``"reset-first"`` it does not.
    """
    n_steps, batch, device = pre.shape[0], pre.shape[1], pre.device
    layer = plan.layer
    spikes = torch.zeros((n_steps, batch, plan.n), dtype=torch.bool, device=device)
    pool_counts = torch.zeros((batch, *layer.input_shape), dtype=torch.int32, device=device)
    cmax = torch.zeros((batch, plan.n), dtype=torch.int32, device=device)
    v = torch.zeros((batch, plan.n), dtype=torch.int8, device=device)
    for t in range(n_steps):
        fired = v > 0
        spikes[t] = fired
        if plan.prop.reset_first:
            v.masked_fill_(fired, 0)
        v += _gated_pool(layer, pre[t].reshape(batch, *layer.input_shape), pool_counts, cmax)
        if not plan.prop.reset_first:
            v.masked_fill_(fired, 0)
    return spikes, spikes.sum(0, dtype=torch.int32)


def _run_layer(
    plan: LayerPlan,
    pres: dict[str, torch.Tensor],
    bias: torch.Tensor,
    dtype: torch.dtype,
    v_steps: Sequence[int] = (),
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Simulate one population over all steps; ``pres`` holds the spikes of every earlier population,
    time-major (T, B, n_pre) (bool, or int8 signed for the input).

    Returns the bool spikes (T, B, n), the spike counts (B, n) and, if ``v_steps`` is given,
    the membrane potential (SRM: ``u = psi + r``) after those steps, shape (len(v_steps), B, n).
    """
    any_pre = pres[plan.inbound[0].sources[0]]
    n_steps, batch, device = any_pre.shape[0], any_pre.shape[1], any_pre.device
    if isinstance(plan.layer, ir.MaxPool2d):
        spikes, counts = _run_relay_pool(plan, pres[plan.inbound[0].sources[0]])
        v_out = torch.zeros((len(v_steps), batch, plan.n), dtype=dtype, device=device) if v_steps else None
        return spikes, counts, v_out
    prop = plan.prop
    state = tm.init_state(prop, (batch, plan.n), dtype, device)
    spikes = torch.empty((n_steps, batch, plan.n), dtype=torch.bool, device=device)
    counts = torch.zeros((batch, plan.n), dtype=torch.int32, device=device)
    record = {t: k for k, t in enumerate(v_steps)}
    v_out = torch.empty((len(v_steps), batch, plan.n), dtype=dtype, device=device) if v_steps else None
    n_pre = sum(pres[s].shape[-1] for ib in plan.inbound for s in ib.sources)
    per_step = batch * max(plan.n, n_pre)
    chunk = max(1, min(n_steps, CHUNK_ELEMENTS // per_step))
    for t0 in range(0, n_steps, chunk):
        t1 = min(n_steps, t0 + chunk)
        dense = None
        streams = []  # per (term, segment): (targets, table, ev_b, ev_i, ev_sign, bounds)
        if plan.dense:
            dense = sum(ib.drive(pres, t0, t1, dtype) for ib in plan.inbound)
        else:
            for ib in plan.inbound:
                for src, (targets, table) in zip(ib.sources, ib.tables):
                    block = pres[src][t0:t1]
                    ev_t, ev_b, ev_i = torch.nonzero(block, as_tuple=True)  # ordered (t, b, i)
                    ev_sign = None
                    if block.dtype != torch.bool:
                        sign = block[ev_t, ev_b, ev_i]
                        if bool((sign < 0).any()):  # Brian2: the positive pathway's synapses first, then _neg's
                            order = torch.sort(ev_t * 2 + (sign < 0), stable=True).indices
                            ev_t, ev_b, ev_i, sign = ev_t[order], ev_b[order], ev_i[order], sign[order]
                        ev_sign = sign.to(dtype)
                    bounds = [0] + torch.cumsum(torch.bincount(ev_t, minlength=t1 - t0), 0).tolist()
                    streams.append((targets, table, ev_b, ev_i, ev_sign, bounds))
        for t in range(t0, t1):
            d: tm.Drive = None
            if dense is not None:
                d = dense[t - t0]
            else:
                parts = []
                for targets, table, ev_b, ev_i, ev_sign, bounds in streams:
                    lo, hi = bounds[t - t0], bounds[t - t0 + 1]
                    if hi > lo:
                        sl = slice(lo, hi)
                        parts.append(_events(targets, table, plan.n, ev_b[sl], ev_i[sl],
                                             None if ev_sign is None else ev_sign[sl]))
                if len(parts) == 1:
                    d = parts[0]
                elif parts:
                    d = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
            s_t = tm.step(prop, state, bias, plan.theta, d, t)
            spikes[t] = s_t
            counts += s_t
            if t in record:
                v_out[record[t]] = tm.readout_value(prop, state)
    return spikes, counts, v_out


def _first_layer_bias(plans: list[LayerPlan], graph: ir.Graph, rates: np.ndarray, signs: np.ndarray, dtype, device):
    """Layer-1 bias: ``I_bias`` (1, n), or ``I_bias + tau * sum_i w_ji sign_i r_i`` (B, n) for current input."""
    first = plans[0]
    readers = [p.name for p in plans if any(graph.input.name in ib.sources for ib in p.inbound)]
    if readers != [first.name] or len(first.inbound) != 1 or len(first.inbound[0].sources) != 1:
        raise ValueError(f"coding='current' needs one layer that alone reads the input; here {readers} read it "
                         "(use a spike coding)")
    current = encoding.input_current(rates, signs, first.layer)  # Hz, (B, n)
    tau_s = float(graph.neuron_for(first.name).tau / second)
    return first.i_bias + torch.as_tensor(current * tau_s, dtype=dtype, device=device)


def simulate_batch(
    graph: ir.Graph,
    plans: list[LayerPlan],
    images: np.ndarray,
    config: SimConfig,
    dtype: torch.dtype,
    device: Any,
    first_index: int = 0,
) -> tuple[dict[str, np.ndarray], np.ndarray, Optional[np.ndarray], dict[str, tuple], dict[str, float], dict]:
    """Run one batch; returns counts, cumulative output counts per bin, output v, spike times, timings,
    and spikes per layer per bin (n_images, n_bins)."""
    t_start = time.perf_counter()
    n_steps, spb = config.n_steps, config.steps_per_bin
    dt_s, dt_ms = float(config.dt / second), float(config.dt / ms)
    rates, signs = encoding.input_rates_hz(images, graph.input)
    trains = encoding.spike_trains(rates, signs, dt_s, n_steps, config.coding, config.seed, first_index)
    pres = {graph.input.name: torch.as_tensor(trains, device=device).transpose(0, 1).contiguous()}  # int8 (T, B, n_in)
    bias0 = _first_layer_bias(plans, graph, rates, signs, dtype, device) if config.coding == "current" else None
    t_encode = time.perf_counter()
    counts, spike_times, bin_counts = {}, {}, {}
    v_steps = list(range(spb - 1, n_steps, spb)) if config.readout in POTENTIAL_READOUTS else []
    out_v = None
    with torch.inference_mode():
        for k, plan in enumerate(plans):
            last = k == len(plans) - 1
            bias = bias0 if (k == 0 and bias0 is not None) else plan.i_bias
            spikes, n_spikes, v = _run_layer(plan, pres, bias, dtype, v_steps if last else ())
            counts[plan.name] = n_spikes.cpu().numpy().astype(np.int64)
            per_step = spikes.sum(dim=2, dtype=torch.int64)  # (T, B)
            bin_counts[plan.name] = per_step.reshape(config.n_bins, spb, -1).sum(1).T.cpu().numpy()
            if plan.name in config.record_times:
                t, img, nrn = (a.cpu().numpy() for a in torch.nonzero(spikes, as_tuple=True))
                order = np.lexsort((nrn, t, img))  # by image, then time (as Brian2)
                spike_times[plan.name] = (img[order], nrn[order], t[order] * dt_ms)
            if last:
                per_bin = spikes.reshape(config.n_bins, spb, spikes.shape[1], plan.n).sum(1, dtype=torch.int64)
                output_counts = per_bin.cumsum(0).permute(1, 0, 2).cpu().numpy()
                out_v = None if v is None else v.permute(1, 0, 2).cpu().numpy().astype(np.float64)
            pres[plan.name] = spikes
    timings = {"encode_s": t_encode - t_start, "run_s": time.perf_counter() - t_encode}
    return counts, output_counts, out_v, spike_times, timings, bin_counts


def resolve_auto(graph: ir.Graph, config: SimConfig, device: str) -> str:
    """``propagation="auto"``: ``"fused"`` on the CPU for the models it supports, else ``"event"``."""
    from bioconv.engines import fused

    if str(device).startswith("cpu") and fused.unsupported(graph, config) is None:
        return "fused"
    return "event"


def _simulate_fused(graph: ir.Graph, images: np.ndarray, labels: np.ndarray, config: SimConfig, dtype: str,
                    batch_size: int, first_index: int, progress: bool, meta: dict) -> SimResult:
    """:func:`simulate` on the fused CPU kernel (:mod:`bioconv.engines.fused`): the result arrays
    are allocated once and each batch fills its rows, so nothing is concatenated afterwards."""
    from bioconv.engines import fused

    t0 = time.perf_counter()
    net = fused.FusedNetwork(graph, config, np.dtype(dtype))
    out = fused.Outputs(net, len(images), config.n_bins, config.readout in POTENTIAL_READOUTS, config.record_times)
    timings = {"build_s": time.perf_counter() - t0, "encode_s": 0.0}
    starts = range(0, len(images), int(batch_size))
    t_run = time.perf_counter()
    for start in tqdm(starts, desc="torch engine (fused)", unit="batch", disable=not progress or len(starts) <= 1):
        stop = min(len(images), start + int(batch_size))
        fused.simulate_batch(net, graph, images[start:stop], config, first_index + start, torch.get_num_threads(),
                             out, start)
    timings["run_s"] = time.perf_counter() - t_run
    timings["total_s"] = time.perf_counter() - t0
    log.info("torch engine: %d images in %.2f s (cpu, %s, fused)", len(images), timings["total_s"], dtype)
    return SimResult(engine="torch", config=config, counts=out.per_layer(), output_counts=out.out_bins, labels=labels,
                     output_v=out.output_v(), spike_times=out.spike_times(), timings=timings, meta=meta,
                     layer_bin_counts=out.layer_bins())


def simulate(
    graph: ir.Graph,
    images: np.ndarray,
    labels: np.ndarray,
    config: SimConfig,
    device: str = "cpu",
    dtype: DType = "float64",
    batch_size: int = 100,
    first_index: int = 0,
    progress: bool = True,
    propagation: Propagation = "auto",
) -> SimResult:
    """Simulate ``images`` (N, *graph.input.shape) through ``graph`` in batches; see the module docstring.

    Parameters
    ----------
    device : torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    dtype : ``"float64"`` (matches Brian2's spike counts) or ``"float32"`` (faster).
    batch_size : images simulated together.
    first_index : dataset index of ``images[0]`` (input spike trains are seeded per index).
    progress : show a tqdm bar over batches.
    propagation : ``"auto"`` (default) picks ``"fused"`` on the CPU when supported, else ``"event"``.
        ``"event"`` adds every synaptic event to the target state in Brian2's
        order (``index_add_``; on CPU this reproduces Brian2's float64 sums bit for bit);
        ``"dense"`` computes the summed input of Conv2d/Dense layers with ``conv2d``/``linear``
        per chunk of steps (faster in float32, on GPUs and for dense spiking; sums differ in the
        last bits); pooling layers always propagate events. ``"fused"`` runs the compiled
        CPU kernel of :mod:`bioconv.engines.fused` (every model): the same
        additions in the same order as ``"event"`` (float64: Brian2's sums bit for bit), one
        pass per image through all layers, images in parallel on ``torch.get_num_threads()``
        threads; other models raise ``ValueError``.
    """
    if propagation not in PROPAGATIONS:
        raise ValueError(f"propagation must be one of {PROPAGATIONS}, got {propagation!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int64)
    if images.ndim != len(graph.input.shape) + 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"images must have shape (N, {graph.input.shape}) and labels (N,), got {images.shape} and {labels.shape}"
        )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA GPU; use device='cpu'")
    unknown = set(config.record_times) - {layer.name for layer in graph.spiking_layers}
    if unknown:
        raise ValueError(f"config.record_times names unknown layers {sorted(unknown)}")
    tdtype = DTYPES[dtype]
    t0 = time.perf_counter()
    if propagation == "auto":
        propagation = resolve_auto(graph, config, device)
    meta = {"device": str(device), "dtype": dtype, "propagation": propagation, "batch_size": int(batch_size),
            "first_index": int(first_index)}
    if propagation == "fused":
        if not str(device).startswith("cpu"):
            raise ValueError(f"propagation='fused' is a CPU kernel; use propagation='dense' or 'event' on {device!r}")
        return _simulate_fused(graph, images, labels, config, dtype, batch_size, first_index, progress, meta)
    plans = compile_graph(graph, config, tdtype, device, propagation)
    run_batch = lambda x, first: simulate_batch(graph, plans, x, config, tdtype, device, first)  # noqa: E731
    timings = {"build_s": time.perf_counter() - t0, "encode_s": 0.0, "run_s": 0.0}
    parts = []
    starts = range(0, len(images), int(batch_size))
    for start in tqdm(starts, desc="torch engine", unit="batch", disable=not progress or len(starts) <= 1):
        stop = min(len(images), start + int(batch_size))
        parts.append(run_batch(images[start:stop], first_index + start))
        for key, value in parts[-1][4].items():
            timings[key] += value
    offsets = np.cumsum([0] + [len(p[1]) for p in parts])
    spike_times = {}
    for name in config.record_times:
        pieces = [p[3][name] for p in parts]
        spike_times[name] = tuple(
            np.concatenate([pc[0] + off if k == 0 else pc[k] for pc, off in zip(pieces, offsets)]) for k in range(3)
        )
    timings["total_s"] = time.perf_counter() - t0
    log.info("torch engine: %d images in %.2f s (%s, %s, %s)", len(images), timings["total_s"], device, dtype, propagation)
    return SimResult(
        engine="torch",
        config=config,
        counts={name: np.concatenate([p[0][name] for p in parts]) for name in parts[0][0]} if parts else {},
        output_counts=np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, config.n_bins, 0), np.int64),
        labels=labels,
        output_v=np.concatenate([p[2] for p in parts]) if parts and parts[0][2] is not None else None,
        spike_times=spike_times,
        timings=timings,
        meta=meta,
        layer_bin_counts={name: np.concatenate([p[5][name] for p in parts]) for name in parts[0][5]} if parts else {},
    )
