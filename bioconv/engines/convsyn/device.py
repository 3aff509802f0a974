"""Brian2 device extensions that know the ``bioconv_conv_synapses`` template.

As brian2cuda and brian2genn do, each device derives from a standalone device and uses
a code-object class whose templater looks in this package's templates first
(``Templater.derive``), then in the parent device's templates:

- ``bioconv_cpp_standalone`` (from ``cpp_standalone``): ``templates/*.cpp``;
- ``bioconv_cuda_standalone`` (from brian2cuda's ``cuda_standalone``): ``cuda_templates/*.cu``.

Everything else (project layout, ``run_args``, the makefile) is the parent device's.
:func:`register` adds the devices to Brian2's device table; :mod:`bioconv.devices`
selects them.
"""

from __future__ import annotations

CPP_DEVICE = "bioconv_cpp_standalone"
CUDA_DEVICE = "bioconv_cuda_standalone"
_PACKAGE = "bioconv.engines.convsyn"


def register(cuda: bool = False) -> str:
    """Register the C++ (or, with ``cuda``, the CUDA) device once; returns its Brian2 name."""
    from brian2.devices.device import all_devices

    name = CUDA_DEVICE if cuda else CPP_DEVICE
    if name in all_devices:
        return name
    all_devices[name] = _make_cuda_device() if cuda else _make_cpp_device()
    return name


def _make_cpp_device():
    from brian2.devices.cpp_standalone.codeobject import CPPStandaloneCodeObject
    from brian2.devices.cpp_standalone.device import CPPStandaloneDevice

    class ConvCPPStandaloneCodeObject(CPPStandaloneCodeObject):
        templater = CPPStandaloneCodeObject.templater.derive(_PACKAGE, templates_dir="templates")

    class ConvCPPStandaloneDevice(CPPStandaloneDevice):
        """``cpp_standalone`` plus weight-shared convolution synapses."""

        def code_object_class(self, codeobj_class=None, fallback_pref=None):
            if codeobj_class is None or codeobj_class is CPPStandaloneCodeObject:
                return ConvCPPStandaloneCodeObject
            return codeobj_class

    return ConvCPPStandaloneDevice()


def _make_cuda_device():
    import brian2cuda  # noqa: F401  (registers cuda_standalone)
    from brian2 import prefs
    from brian2cuda.codeobject import CUDAStandaloneAtomicsCodeObject, CUDAStandaloneCodeObject
    from brian2cuda.device import CUDAStandaloneDevice

    from bioconv.engines.convsyn.objects import TEMPLATE

    class ConvCUDAStandaloneCodeObject(CUDAStandaloneCodeObject):
        templater = CUDAStandaloneCodeObject.templater.derive(_PACKAGE, templates_dir="cuda_templates")

    class ConvCUDAAtomicsCodeObject(CUDAStandaloneAtomicsCodeObject):
        """Atomic ``on_pre`` (``atomicAdd``) for the parallel convolution kernel."""

        templater = ConvCUDAStandaloneCodeObject.templater

    class ConvCUDAStandaloneDevice(CUDAStandaloneDevice):
        """brian2cuda's ``cuda_standalone`` plus weight-shared convolution synapses."""

        _base_class = False  # True while brian2cuda copies brianlib/ from next to its code-object class

        def code_object_class(self, codeobj_class=None, fallback_pref=None):
            if self._base_class:
                return CUDAStandaloneCodeObject
            if codeobj_class is None or codeobj_class is CUDAStandaloneCodeObject:
                return ConvCUDAStandaloneCodeObject
            return codeobj_class

        def copy_source_files(self, writer, directory):
            self._base_class = True
            try:
                return super().copy_source_files(writer, directory)
            finally:
                self._base_class = False

        def code_object(self, owner, name, abstract_code, variables, template_name, variable_indices,
                        codeobj_class=None, template_kwds=None, override_conditional_write=None,
                        compiler_kwds=None):
            if template_name == TEMPLATE and prefs["devices.cuda_standalone.use_atomics"]:
                codeobj_class = ConvCUDAAtomicsCodeObject
            return super().code_object(owner, name, abstract_code, variables, template_name, variable_indices,
                                       codeobj_class=codeobj_class, template_kwds=template_kwds,
                                       override_conditional_write=override_conditional_write,
                                       compiler_kwds=compiler_kwds)

    return ConvCUDAStandaloneDevice()
