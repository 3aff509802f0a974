"""The models layer every engine reads: neuron/synapse parameter objects and their update code.

:mod:`bioconv.neurons` and :mod:`bioconv.synapses` hold the parameter objects and their
Brian2 ``Equations`` and roles; :mod:`bioconv.models.codegen` turns them into Brian2's own
generated statements and :mod:`bioconv.models.dynamics` packages them per layer and time
step (:class:`Dynamics`) with the update schedule.
"""

from bioconv.models.dynamics import (SCHEDULE, SCHEDULES, Dynamics, Schedule, brian2_schedule, check_schedule,
                                     make_dynamics, readout_dynamics, readout_neuron, relay_dynamics)
from bioconv.neurons import IF, LIF, NEURON_MODELS, SRM
from bioconv.synapses import SYNAPSE_MODELS, Alpha, Delta, Exponential

__all__ = ["SCHEDULE", "SCHEDULES", "Schedule", "brian2_schedule", "check_schedule", "Dynamics", "make_dynamics",
           "readout_dynamics", "readout_neuron", "relay_dynamics", "IF", "LIF", "SRM",
           "NEURON_MODELS", "Alpha", "Delta", "Exponential", "SYNAPSE_MODELS"]
