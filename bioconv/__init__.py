"""bioconv: trained PyTorch CNNs to biologically plausible Brian2 spiking networks.

The data flow is one-way::

    torch nn.Module --from_torch--> Graph (IR) --normalize--> Graph' --> engine --> SimResult --> table --> figure

The Brian2 side (``bioconv.ir``, ``bioconv.neurons``, ``bioconv.connectivity``,
``bioconv.engines.brian2``) never imports torch, so it runs in the Python 3.12
brian2cuda environment too.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
