r"""Construction of the Brian2 network of a Graph (used by :mod:`bioconv.engines.brian2`).

Objects (groups and synapses on ``defaultclock`` with ``dt = config.dt``, explicit names,
explicit namespaces, synapses with a scalar delay of 0):

- ``<input>`` (and ``<input>_neg`` for signed inputs): threshold-only ``NeuronGroup`` of
  ``n_in`` neurons that spike at step ``k`` iff ``ta_in(t, i) > 0.5`` (``< -0.5`` for the
  negative group); ``ta_in`` is a ``TimedArray`` of shape (B·n_steps, n_in) holding the
  signed spike trains of :func:`bioconv.encoding.spike_trains` for B images back to back.
- one ``NeuronGroup`` per spiking layer, named after the layer: the neuron model's
  equations + the synapse model's post equations + ``spike_count : integer``, threshold
  ``neuron.threshold``, reset ``neuron.reset_code; spike_count += 1``, per-neuron
  ``I_bias`` (bias per channel expanded) and ``theta``. A ``run_regularly`` with
  ``dt = T_image, when='start'`` zeroes every state variable at each image start (and, with
  ``coding="current"``, loads layer 1's per-image ``I_bias`` from ``ta_bias``).
- one ``Synapses`` per projection onto a layer (:func:`bioconv.projections.projections`):
  ``<layer>_syn`` from the previous spiking group (or the input), or per branch of a
  residual ``Add`` (``<branch>_syn``, all onto the Add's group, delivered in branch order via
  ``order``) and per population of a ``Concat`` (``<layer>_syn_<source>``); ``_neg`` copies
  with weights ``-w`` from ``<input>_neg``; ``connect(i=..., j=...)`` with the arrays of
  :func:`bioconv.connectivity.layer_synapses`, ``on_pre`` from the synapse model.
- a max-pool layer is a relay group (``v : 1``, threshold ``v > 0.5``, reset ``v = 0``) fed by
  the gate of :class:`bioconv.connectivity.GatedMaxPool` (``<pool>_syn``, its counts reset
  per image).
- with ``readout="integrate"`` the output group has no threshold and no reset and integrates
  (:func:`bioconv.models.readout_neuron`); ``out_v_mon`` records its ``v``.
- with ``plan.conv == "procedural"`` the projection of a plain Conv2d (the whole layer, groups 1,
  dilation 1, zero padding) is weight-shared instead (kernel only, run parameter
  ``<layer>_syn.w`` = the flat kernel; :mod:`bioconv.engines.brian2_conv`); dense layers,
  pools, residual/concat projections and grouped or dilated convolutions stay explicit.
- monitors: ``<layer>_count_mon`` (cumulative ``spike_count`` every image start),
  ``out_bin_mon`` (output ``spike_count`` every bin), ``out_v_mon`` (voltage readout) and
  ``<layer>_spikes`` (``SpikeMonitor``, only for ``config.record_times``), all recorded at
  ``when='start', order=-1`` i.e. before the per-image reset; ``<layer>_pop_mon``
  (``PopulationRateMonitor``: the layer's spikes in every step, for spikes vs time).

Everything a run changes (weights, biases, thresholds, input trains) is a *run parameter*
``"<object>.<variable>"`` → array (:func:`run_parameters`), which the standalone binary
takes on its command line, so new values never recompile.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from bioconv import ir
from bioconv import projections as pj
from bioconv.connectivity import Connectivity, GatedMaxPool
from bioconv.engines.brian2_conv import check_conv_mode, conv_pathway, is_procedural, kernel_weights, synapse_equivalents
from bioconv.models.dynamics import brian2_schedule
from bioconv.simulation import POTENTIAL_READOUTS

log = logging.getLogger(__name__)

#: bump when the generated network changes, so cached standalone builds are rebuilt
BUILD_VERSION = 4
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_name(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"layer name {name!r} is not a valid Brian2 object name; use letters, digits and '_'")
    return name


@dataclass(frozen=True, eq=False)
class Plan:
    """Structure of one Brian2 network: what is compiled in (everything but run parameters)."""

    graph: ir.Graph
    config: Any  # SimConfig
    batch: int  # images per run
    signed: bool  # negative input spikes possible
    conv: str = "explicit"  # convolution synapses: "explicit" or "procedural" (bioconv.engines.brian2_conv)
    layers: tuple = field(init=False)
    pre: dict = field(init=False)  # layer name -> its projections (bioconv.projections), delivery order

    def __post_init__(self) -> None:
        check_conv_mode(self.conv)
        layers = self.graph.spiking_layers
        pre = {}
        _check_name(self.graph.input.name)
        for layer in layers:
            _check_name(layer.name)
            if self.graph.neuron_for(layer.name) is None or self.graph.synapse is None:
                raise ValueError(
                    "the graph has no neuron/synapse model; convert it first "
                    "(graph.with_models(neuron=IF(), synapse=Delta()) or `bioconv convert`)"
                )
            pre[layer.name] = pj.projections(self.graph, layer.name,
                                             skip_synapses=_plain_conv(self.conv, self.graph, layer))
            for p in pre[layer.name]:
                _check_name(p.name)
        if self.current:
            readers = [n for n, ps in pre.items() if any(p.source == self.graph.input.name for p in ps)]
            if readers != [layers[0].name] or len(pre[layers[0].name]) != 1:
                raise ValueError(f"coding='current' needs one layer that alone reads the input; here {readers} "
                                 "read it (use a spike coding)")
        unknown = set(self.config.record_times) - set(pre)
        if unknown:
            raise ValueError(f"record_times names unknown layers {sorted(unknown)}; spiking layers are {list(pre)}")
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "pre", pre)

    @property
    def n_in(self) -> int:
        return int(np.prod(self.graph.input.shape))

    @property
    def output(self) -> ir.Layer:
        return self.layers[-1]

    @property
    def current(self) -> bool:
        return self.config.coding == "current"

    def key(self, device: str, extra: Any = None) -> str:
        """Hash of everything compiled into the network (not the run parameters)."""
        from brian2 import __version__ as brian_version

        from bioconv.neurons import model_to_dict

        desc = {
            "build_version": BUILD_VERSION,
            "brian2": brian_version,
            "device": device,
            "batch": self.batch,
            "signed": self.signed,
            "conv": self.conv,
            "config": {k: v for k, v in self.config.to_dict().items() if k != "seed"},
            "input": [list(self.graph.input.shape), self.graph.input.name],
            "synapse": model_to_dict(self.graph.synapse),
            "schedule": self.graph.schedule,
            "layers": [_layer_structure(layer, self.graph) for layer in self.graph.layers],
            "extra": extra,
        }
        return hashlib.sha1(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _layer_structure(layer: ir.Layer, graph: ir.Graph) -> dict:
    from bioconv.neurons import model_to_dict

    out: dict = {"type": type(layer).__name__, "name": layer.name, "in": list(layer.input_shape),
                 "inputs": list(layer.inputs)}
    for attr in ("stride", "padding", "kernel_size", "dilation"):
        if hasattr(layer, attr):
            out[attr] = list(getattr(layer, attr))
    for attr in ("groups", "padding_mode", "spiking"):
        if hasattr(layer, attr):
            out[attr] = getattr(layer, attr)
    if hasattr(layer, "weight"):
        out["weight_shape"] = list(layer.weight.shape)
    if ir.is_spiking(layer) and graph.neuron_for(layer.name) is not None:
        out["neuron"] = model_to_dict(graph.neuron_for(layer.name))
    return out


def _per_neuron(value: Any, shape: tuple) -> np.ndarray:
    """Scalar, per-channel (C,) or full-shape array → flat float64 per neuron (torch order)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 1 and len(shape) == 3 and arr.shape[0] == shape[0]:
        arr = arr[:, None, None]
    return np.ascontiguousarray(np.broadcast_to(arr, shape), dtype=np.float64).ravel()


def layer_bias(layer: ir.Layer, graph: Optional[ir.Graph] = None) -> np.ndarray:
    """Per-neuron bias (flat): bias per channel expanded for Conv2d, the branches' sum for Add, 0 for pools."""
    if graph is not None:
        return pj.bias(graph, layer.name)
    shape = tuple(layer.output_shape)
    if isinstance(layer, (ir.Conv2d, ir.Dense)):
        return _per_neuron(layer.bias, shape)
    return np.zeros(int(np.prod(shape)))


def input_arrays(plan: Plan, images: np.ndarray, first_index: int, graph: Optional[ir.Graph] = None) -> dict[str, np.ndarray]:
    """The per-batch TimedArray values: ``ta_in`` (spike codings) or ``ta_bias`` (current coding).

    ``images`` may hold fewer than ``plan.batch`` images; the rest is padded (no input spikes,
    bias only) and its results are dropped by the caller. ``graph`` (default ``plan.graph``)
    gives layer 1's weights and bias for the current coding.
    """
    from bioconv.encoding import input_current, input_rates_hz, spike_trains

    cfg, graph = plan.config, plan.graph if graph is None else graph
    n = len(images)
    if n > plan.batch:
        raise ValueError(f"batch of {n} images exceeds the compiled batch size {plan.batch}")
    rates, signs = input_rates_hz(images, graph.input)
    if plan.current:
        first = graph.layer(plan.layers[0].name)
        tau_s = float(graph.neuron_for(first.name).tau / _second())
        bias = np.tile(layer_bias(first, graph), (plan.batch, 1))
        bias[:n] += tau_s * input_current(rates, signs, first)  # I/τ·τ: current as extra bias
        return {"ta_bias.values": bias}
    if (signs < 0).any() and not plan.signed:
        raise ValueError("images contain negative values but the network was built without signed input")
    trains = spike_trains(rates, signs, float(cfg.dt / _second()), cfg.n_steps, cfg.coding, cfg.seed, first_index)
    values = np.zeros((plan.batch * cfg.n_steps, plan.n_in), dtype=np.float64)
    values[: n * cfg.n_steps] = trains.reshape(n * cfg.n_steps, plan.n_in)
    return {"ta_in.values": values}


def placeholder_inputs(plan: Plan) -> dict[str, np.ndarray]:
    """Zero TimedArray values of the right shape (what a standalone build compiles in)."""
    if plan.current:
        return {"ta_bias.values": np.zeros((plan.batch, int(np.prod(plan.layers[0].output_shape))))}
    return {"ta_in.values": np.zeros((plan.batch * plan.config.n_steps, plan.n_in))}


def _second():
    from brian2 import second

    return second


def parameter_arrays(plan: Plan, graph: Optional[ir.Graph] = None) -> dict[str, np.ndarray]:
    """Weights, biases and thresholds as run parameters ``"<object>.<var>" -> array``.

    ``graph`` (default ``plan.graph``) may carry new values of the same structure.
    """
    from bioconv.neurons import model_to_dict

    graph = plan.graph if graph is None else graph
    if graph is not plan.graph and (
        model_to_dict(graph.synapse) != model_to_dict(plan.graph.synapse)
        or tuple(graph.input.shape) != tuple(plan.graph.input.shape)
    ):
        raise ValueError("the new graph has another synapse model or input shape; build a new Simulator for it")
    out: dict[str, np.ndarray] = {}
    for layer in plan.layers:
        new = graph.layer(layer.name)
        if type(new) is not type(layer) or _layer_structure(new, graph) != _layer_structure(layer, plan.graph):
            raise ValueError(
                f"layer {layer.name!r} changed structure or neuron model (compiled into the network); "
                "build a new Simulator for it (only weights, biases, thresholds and pool scales can change)"
            )
        if isinstance(layer, ir.MaxPool2d):  # relay: no weights, no bias
            pass
        elif not (plan.current and layer is plan.layers[0]):  # current coding: layer 1 gets input as bias
            procedural = _plain_conv(plan.conv, plan.graph, layer)  # structure: the compiled graph
            weights = None if procedural else pj.projection_weights(graph, layer.name)
            for proj in plan.pre[layer.name]:
                w = kernel_weights(new) if procedural else weights[proj.name]
                out[f"{proj.name}.w"] = w
                if plan.signed and proj.source == graph.input.name:
                    out[f"{proj.name}_neg.w"] = -w
            out[f"{layer.name}.I_bias"] = layer_bias(new, graph)
        out[f"{layer.name}.theta"] = _per_neuron(new.threshold, tuple(new.output_shape))
    return out


@dataclass
class Built:
    """Brian2 objects of one network and where to read its outputs."""

    net: Any
    objects: dict  # "<object>" -> Brian2 object (groups, synapses, TimedArrays)
    outputs: dict  # output name -> (owner object, variable name)
    n_synapses: int
    index_seconds: float


def build_network(plan: Plan, values: dict[str, np.ndarray]) -> Built:
    """Create the Brian2 objects of ``plan`` with initial ``values`` (run parameters).

    Must be called with the wanted Brian2 device already selected (:mod:`bioconv.devices`).
    """
    import time

    from brian2 import (Equations, Network, NeuronGroup, PopulationRateMonitor, SpikeMonitor, StateMonitor,
                        Synapses, TimedArray, defaultclock, ms)

    import bioconv.integration  # noqa: F401  (registers method "exact_affine")

    cfg, graph = plan.config, plan.graph
    dt, T = cfg.dt, cfg.duration
    # Every group and synapse runs on Brian2's defaultclock (brian2cuda's synaptic propagation
    # code refers to ``defaultclock`` by name); monitors and the per-image reset have their own.
    defaultclock.dt = dt
    objects: dict[str, Any] = {}
    outputs: dict[str, tuple] = {}
    net = Network(name="bioconv_net")
    if graph.schedule != "brian2":  # e.g. "reset-first": resets before synaptic delivery (bioconv.models.SCHEDULES)
        net.schedule = brian2_schedule(graph.schedule)
    if plan.current:
        ta = TimedArray(values["ta_bias.values"], dt=T, name="ta_bias")
    else:
        ta = TimedArray(values["ta_in.values"], dt=dt, name="ta_in")
        name = graph.input.name
        objects[name] = NeuronGroup(plan.n_in, "", threshold="ta_in(t, i) > 0.5", reset="",
                                    name=name, namespace={"ta_in": ta})
        if plan.signed:
            objects[name + "_neg"] = NeuronGroup(plan.n_in, "", threshold="ta_in(t, i) < -0.5", reset="",
                                                 name=name + "_neg", namespace={"ta_in": ta})
    objects[ta.name] = ta
    n_syn, index_s = 0, 0.0
    for layer in plan.layers:
        if isinstance(layer, ir.MaxPool2d):
            group, n_new = _build_relay_pool(plan, layer, objects, T)
            n_syn += n_new
        else:
            group, n_new, dt_index = _build_population(plan, layer, objects, values, ta, T)
            n_syn, index_s = n_syn + n_new, index_s + dt_index
        outputs[f"count:{layer.name}"] = (
            StateMonitor(group, "spike_count", record=True, dt=T, when="start", order=-1,
                         name=f"{layer.name}_count_mon"), "spike_count")
        outputs[f"final:{layer.name}:spike_count"] = (group, "spike_count")
        outputs[f"pop:{layer.name}"] = (PopulationRateMonitor(group, name=f"{layer.name}_pop_mon"), "rate")
        if layer.name in cfg.record_times:
            outputs[f"spikes_i:{layer.name}"] = (SpikeMonitor(group, record=True, name=f"{layer.name}_spikes"), "i")
            outputs[f"spikes_t:{layer.name}"] = (outputs[f"spikes_i:{layer.name}"][0], "t")
    out_group = objects[plan.output.name]
    outputs["bins"] = (StateMonitor(out_group, "spike_count", record=True, dt=cfg.bin, when="start", order=-1,
                                    name="out_bin_mon"), "spike_count")
    if cfg.readout in POTENTIAL_READOUTS:
        neuron = graph.neuron_for(plan.output.name)
        if cfg.readout == "integrate":
            from bioconv.models import readout_neuron

            neuron = readout_neuron(neuron)
        var = neuron.readout_variable
        outputs["vbins"] = (StateMonitor(out_group, var, record=True, dt=cfg.bin, when="start", order=-1,
                                         name="out_v_mon"), var)
        for v in neuron.state_variables:
            outputs[f"final:{plan.output.name}:{v}"] = (out_group, v)
    for obj in list(objects.values()) + [o for o, _ in outputs.values()]:
        if not isinstance(obj, TimedArray) and obj not in net.objects:
            net.add(obj)
    return Built(net, objects, outputs, n_syn, index_s)


def _plain_conv(conv: str, graph: ir.Graph, layer: ir.Layer) -> bool:
    """Whether ``layer``'s input is built weight-shared under mode ``conv``: a plain Conv2d (groups 1,
    dilation 1, zero padding) whose single projection reads one whole population."""
    if not (is_procedural(conv, layer) and layer.groups == 1 and tuple(layer.dilation) == (1, 1)
            and layer.padding_mode == "zeros"):
        return False
    terms = pj.incoming(graph, layer.name)
    return len(terms) == 1 and terms[0][0] is layer and len(pj.segments(graph, terms[0][1])) == 1


def _build_population(plan: Plan, layer: ir.Layer, objects: dict, values: dict, ta: Any, T: Any):
    """The NeuronGroup of one spiking population and one ``Synapses`` per projection onto it.

    Returns (group, number of synapses, seconds spent building index arrays).
    """
    import time

    from brian2 import Equations, NeuronGroup, Synapses, ms

    graph = plan.graph
    neuron = graph.neuron_for(layer.name)
    n = int(np.prod(layer.output_shape))
    integrate = plan.config.readout == "integrate" and layer is plan.output  # non-spiking integrator output
    if integrate:
        from bioconv.models import readout_neuron

        neuron = readout_neuron(neuron)
    eqs = neuron.equations() + graph.synapse.post_equations(neuron)
    eqs = eqs + Equations("spike_count : integer")
    refractory = neuron.refractory if float(neuron.refractory) > 0 else False
    first_current = plan.current and layer is plan.layers[0]
    # the integrator never fires; its constant-false threshold keeps the spike monitors valid
    group = NeuronGroup(n, eqs, threshold="False" if integrate else neuron.threshold,
                        reset=None if integrate else f"{neuron.reset_code}\nspike_count += 1",
                        refractory=refractory, method=neuron.method, name=layer.name,
                        namespace={"ta_bias": ta} if first_current else {})
    state = list(neuron.state_variables) + [v for v in graph.synapse.state_variables if v in group.variables]
    # "x = 0*x" keeps the unit of dimensioned states (alpha I_syn, x_syn are in Hz)
    code = [f"{v} = 0" if group.variables[v].dim.is_dimensionless else f"{v} = 0*{v}" for v in state]
    if refractory is not False:
        # end refractoriness first: writes to "(unless refractory)" states are skipped while
        # not_refractory is False, which would carry v over from the previous image
        code = ["not_refractory = True", "lastspike = -1e4*second"] + code
    if first_current:
        code.append("I_bias = ta_bias(t, i)")
    group.run_regularly("\n".join(code), dt=T, when="start", order=0, name=f"{layer.name}_image_reset")
    for var in ("I_bias", "theta"):
        key = f"{layer.name}.{var}"
        if key in values:
            setattr(group, var, values[key])
    objects[layer.name] = group
    n_syn, index_s = 0, 0.0
    if first_current:  # current coding: layer 1 gets its input as bias, no input synapses
        return group, 0, 0.0
    procedural = _plain_conv(plan.conv, graph, layer)
    for order, proj in enumerate(plan.pre[layer.name]):
        start = time.perf_counter()
        conn = proj.synapses
        index_s += time.perf_counter() - start
        if not procedural and not isinstance(conn, Connectivity):
            raise ValueError(f"layer {layer.name!r}: no weighted synapses for the Brian2 engine")
        pres = [(proj.source, "")]
        if plan.signed and proj.source == graph.input.name:
            pres.append((graph.input.name + "_neg", "_neg"))
        for pre_name, suffix in pres:
            sname = f"{proj.name}{suffix}"
            if procedural:  # weight-shared: kernel only, same names and delivery order as the explicit build
                objects[sname] = conv_pathway(objects[pre_name], group, layer, graph.synapse.on_pre(neuron),
                                              values.get(f"{sname}.w"), sname)
                n_syn += synapse_equivalents(layer)
                continue
            syn = Synapses(objects[pre_name], group, "w : 1", on_pre=graph.synapse.on_pre(neuron),
                           delay=0 * ms, name=sname, order=order)  # scalar delay: no per-synapse delay array
            syn.connect(i=conn.i, j=conn.j)
            syn.w = values.get(f"{sname}.w", 0.0)
            objects[sname] = syn
            n_syn += len(conn)
    return group, n_syn, index_s


def _build_relay_pool(plan: Plan, layer: ir.MaxPool2d, objects: dict, T: Any):
    """The gated max-pool (Rueckauer et al. 2017) as a relay group plus its gating synapses.

    Pool unit: ``v : 1`` set by passed spikes (``v_post += w`` with the gate's ``w`` of
    :attr:`bioconv.connectivity.GatedMaxPool.on_pre_gate`), threshold ``v > 0.5``, reset
    ``v = 0``, no bias, no leak, whatever the graph's neuron model. ``cmax``/``winner`` (post)
    and ``c`` (synapse) are reset with every image.
    """
    from brian2 import NeuronGroup, Synapses, ms

    (proj,) = plan.pre[layer.name]
    gate = proj.synapses
    if not isinstance(gate, GatedMaxPool):  # pragma: no cover - projections gives a gate for MaxPool2d
        raise AssertionError(type(gate))
    n = int(np.prod(layer.output_shape))
    post = "\n".join(f"{k} : 1" for k in gate.post_state)
    group = NeuronGroup(n, f"v : 1\n{post}\ntheta : 1\nI_bias : 1\nspike_count : integer", threshold="v > 0.5",
                        reset="v = 0\nspike_count += 1", method="exact", name=layer.name)
    group.run_regularly("\n".join(["v = 0"] + [f"{k} = {v}" for k, v in gate.post_state.items()]),
                        dt=T, when="start", order=0, name=f"{layer.name}_image_reset")
    objects[layer.name] = group
    syn = Synapses(objects[proj.source], group, "\n".join(f"{k} : 1" for k in gate.synapse_state),
                   on_pre=gate.on_pre_gate + "\nv_post += w", delay=0 * ms, name=proj.name)
    syn.connect(i=gate.i, j=gate.j)
    syn.run_regularly("\n".join(f"{k} = {v}" for k, v in gate.synapse_state.items()), dt=T, when="start",
                      order=0, name=f"{proj.name}_image_reset")
    objects[proj.name] = syn
    return group, len(gate)
