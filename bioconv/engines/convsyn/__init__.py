"""Weight-shared (procedural) convolution synapses for Brian2's C++ and CUDA standalone devices.

- :mod:`.objects`: :class:`ConvGeometry` and the Brian2 objects (``ConvSynapses`` group holding
  the kernel, ``ConvPathway`` code runner) created by :func:`make_conv_synapses`;
- :mod:`.device`: the device extensions ``bioconv_cpp_standalone`` and
  ``bioconv_cuda_standalone`` whose templaters find ``templates/bioconv_conv_synapses.cpp``
  and ``cuda_templates/bioconv_conv_synapses.cu``.
"""

from bioconv.engines.convsyn.device import CPP_DEVICE, CUDA_DEVICE, register
from bioconv.engines.convsyn.objects import TEMPLATE, ConvGeometry, make_conv_synapses

__all__ = ["CPP_DEVICE", "CUDA_DEVICE", "TEMPLATE", "ConvGeometry", "make_conv_synapses", "register"]
