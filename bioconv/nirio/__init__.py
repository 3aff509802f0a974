r"""Bridge to the Neuromorphic Intermediate Representation (NIR, ``nir`` 1.0.8; Pedersen et al. 2024).

:func:`to_nir` writes a converted :class:`~bioconv.ir.Graph` as a ``nir.NIRGraph``;
:func:`from_nir` reads a NIR graph (from bioconv, snnTorch, Norse, ...) into a Graph that
both engines and Brian2 run. :func:`read_nir` / :func:`write_nir` are the ``.nir`` (HDF5)
files. The package is named ``nirio`` so that ``import nir`` still finds the NIR package.

Spikes and the time step
------------------------
NIR's neuron nodes are continuous-time ODEs driven by the output :math:`I(t)` of the
linear node before them (``Affine``: :math:`I = W S + b`). The exporters of snnTorch
(``dt = 1e-4`` s) and Norse (``dt = 1e-3`` s) write the parameters of their discrete update
so that the forward-Euler step of the ODE with their ``dt`` is that update, with a spike
entering :math:`I` as a pulse of height 1 for one step. A spike therefore carries the
charge :math:`\Delta t` (the *pulse width*, option ``dt``), times the weight, into
:math:`I`; we use the same convention in both directions. (Norse 1.1's ``IAFCell`` export is
the exception: its update is ``v += W`` but it writes ``r = 1``, i.e. unit-charge spikes; read
such IF graphs with ``dt = 1 s``.) With :math:`\tau_\mathrm{ref}` the
bioconv neuron's reference time (``tau``, 1 ms) and :math:`w` the bioconv weight (the jump
of :math:`v` per spike), :math:`I_\mathrm{bias}` the bioconv bias (README "Conventions"):

========== =============================================== ======================================================
NIR node   NIR equation                                    bioconv (delta synapse unless stated)
========== =============================================== ======================================================
IF         :math:`\dot v = R I`                            IF: :math:`w = R\,\Delta t\,W`,
                                                           :math:`I_\mathrm{bias} = \tau_\mathrm{ref} R b`
LIF        :math:`\tau\dot v = (v_\mathrm{leak}-v) + R I`  LIF(:math:`\tau_m=\tau`): :math:`w = R\,\Delta t\,W/\tau`,
                                                           :math:`I_\mathrm{bias} = \tau_\mathrm{ref}(v_\mathrm{leak}+Rb)/\tau`
CubaLIF    :math:`\tau_s\dot I = -I + w_\mathrm{in}S`,     LIF(:math:`\tau_m`) + ``Exponential``\ (:math:`\tau_s`):
           :math:`\tau_m\dot v = (v_\mathrm{leak}-v)+RI`   :math:`w = R w_\mathrm{in}\Delta t\,W/\tau_m`,
                                                           :math:`I_\mathrm{bias} = \tau_\mathrm{ref}(v_\mathrm{leak}+Rw_\mathrm{in}b)/\tau_m`
========== =============================================== ======================================================

All three spike when :math:`v > v_\mathrm{threshold}` (bioconv's strict ``v > theta``, θ =
:math:`v_\mathrm{threshold}`) and reset to :math:`v_\mathrm{reset}`, which must be 0
(bioconv's reset to zero). Export inverts the table with :math:`R = 1/\Delta t` (IF) or
:math:`R = \tau_m/\Delta t` (LIF, CubaLIF), :math:`v_\mathrm{leak} = 0`, :math:`w_\mathrm{in}=1`,
so NIR weights equal bioconv weights and the affine bias is :math:`b = I_\mathrm{bias}\Delta
t/\tau_\mathrm{ref}` (the charge per step); for CubaLIF the bias is written as
:math:`v_\mathrm{leak} = \tau_m I_\mathrm{bias}/\tau_\mathrm{ref}` instead, because bioconv's
bias does not pass through the synaptic filter. Import of a CubaLIF with an affine bias
uses its steady state (the filter's rise over the first :math:`\tau_s` of each image is not
reproduced). Scale factors within :math:`10^{-12}` of 1 are taken as exactly 1, so that a
bioconv → NIR → bioconv round trip is bit-exact.

Layers: bioconv ``Conv2d``/``Dense`` become ``Conv2d``/``Affine`` + neuron node;
``AvgPool2d`` (scale :math:`s`) becomes ``AvgPool2d`` (+ ``Scale`` :math:`s` when
:math:`s \ne 1`) + neuron node; ``Flatten`` is ``Flatten``. On import, linear nodes between two
neuron nodes form one bioconv layer: ``Conv2d``/``Affine``/``Linear`` (optionally behind a
``Flatten`` and followed by a ``Scale``), or a pool (``AvgPool2d``; ``SumPool2d`` =
AvgPool2d with scale :math:`k_yk_x`; optional ``Scale``) with its own neurons, or a pool
followed by a conv or by ``Flatten`` + ``Affine`` (snnTorch's non-spiking pool), which is
folded into that layer exactly (:mod:`bioconv.pool_folding`).

Discretization (``discretization``)
-----------------------------------
``"continuous"`` (default) takes the ODE as written and bioconv integrates it exactly
(decay :math:`e^{-\Delta t/\tau}` per step). ``"euler"`` reproduces the exporter's discrete
update: a LIF with :math:`\tau` decays by :math:`\beta = 1 - \Delta t/\tau` per step in
snnTorch (``tau = dt/(1-beta)``) and Norse, so bioconv uses
:math:`\tau_m = -\Delta t/\ln(1-\Delta t/\tau)` and
:math:`I_\mathrm{bias} = \tau_\mathrm{ref}(v_\mathrm{leak}+Rb)/\tau_m` (same per-step decay and
bias charge), and :math:`w = R\,\Delta t\,W/(\tau\beta)`: the exporter adds a spike's charge
before its threshold test, bioconv (Brian2) after it, so that the charge decays once by
:math:`\beta` before it is tested; dividing by β makes it :math:`R\Delta t W/\tau` at the test,
as in the exporter (CubaLIF: only the two time constants are converted). What then still
differs from snnTorch is the schedule: bioconv (Brian2) updates, thresholds, then adds the
step's input, then resets, so each layer adds one step of delay and a neuron loses the input
that arrives in the step in which it fires (reset to zero), and layer :math:`l` has integrated
its bias :math:`l` steps longer; snnTorch adds the input before the threshold and keeps it after
a reset-to-zero (its ``Synaptic`` neuron instead holds ``mem`` at 0 for the step after a spike).
For IF neurons with reset by subtraction and no bias the two are spike-for-spike identical
after the delay of one step per layer (tested).

What NIR cannot express
-----------------------
Export raises ``ValueError`` naming the layer and the missing NIR feature for: reset by
subtraction (NIR resets to :math:`v_\mathrm{reset}`), alpha synapses, SRM neurons, refractory
periods, the gated max-pool, and IF neurons with exponential synapses (NIR has no
current-based IF). The rate coding of the input (``Input.rate_scale``) has no NIR node; it
travels in the ``Input`` node's metadata (``bioconv_rate_scale_hz``), the graph metadata
in ``bioconv_meta`` (JSON). Import raises ``ValueError`` naming the node for every node type
other than those above (``LI``, ``CubaLI``, ``I``, ``Threshold``, ``Delay``, ``Conv1d``,
nested graphs i.e. recurrent layers), for branching or recurrent edges, for
:math:`v_\mathrm{reset} \ne 0`, grouped or dilated convolutions, padded pools, a membrane
time constant that varies within a layer, and weights scaled differently within one
conv channel. snnTorch 1.0 exports reset-by-subtraction neurons with :math:`v_\mathrm{reset}=0`
like reset-to-zero ones; ``reset="subtract"`` imports such graphs as they were trained.
"""

from __future__ import annotations

from bioconv.nirio.export import to_nir, write_nir
from bioconv.nirio.importer import ImportOptions, from_nir, read_nir

__all__ = ["ImportOptions", "from_nir", "read_nir", "to_nir", "write_nir"]
