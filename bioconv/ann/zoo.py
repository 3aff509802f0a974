"""Named architectures (spec strings in the grammar of :mod:`bioconv.ann.spec`).

=====================  ==========================================================================
``mcr-mnist``          the MCR-Norm paper's Table 1, MNIST (about 5e8 synapses as an SNN: GPU training only)
``mcr-cifar10``        the MCR-Norm paper's Table 1, CIFAR-10
``cnn7``               Ding et al.'s (2021) 7-layer CNN ``32c3-p2-32c3-p2-32c3-p2-32FC-10FC`` (any input size)
``rueckauer-cifar``    Rueckauer et al. (2017, sec. 3.1): 4 conv layers (32-32-64-64, 3x3, BN), 2x2 max pooling after the
                       2nd and 4th, then 512 and 10 FC
``rueckauer-cifar-avg``  the same with average pooling (Rueckauer et al.'s (2017, sec. 3.1) avg-pool variant)
``bn-cnn``             a small batch-norm CNN in the style of Table 1 of the MCR-Norm paper:
                       ``16c3BN-p2-32c3BN-p2-64c3BN-p2-64FC-10FC`` (conv-BN-ReLU blocks, average
                       pooling); BN folds into the convs on conversion
``tiny``               ``4c3-p2-8c3-p2-10FC``: a very small net for fast tests (28x28 MNIST, 8x8 digits)
=====================  ==========================================================================

Specs without an input token (``cnn7``, ``tiny``) take the dataset's input shape.
"""

from __future__ import annotations

ZOO: dict[str, str] = {
    "mcr-mnist": "28x28-64c3BN-128c3BN-128c3BN-p2-D0.1-128c3BN-256c3BN-256c3BN-p2-D0.1-256c3BN-512c3BN-D0.1"
                 "-2048FC-D0.4-10FC",
    "mcr-cifar10": "32x32x3-64c3BN-128c3BN-128c3BN-p2-D0.1-128c3BN-256c3BN-p2-D0.1-256c3BN-256c3BN-p2-D0.1"
                   "-512c3BN-p2-D0.1-2048FC-D0.4-10FC",
    "cnn7": "32c3-p2-32c3-p2-32c3-p2-32FC-10FC",
    "rueckauer-cifar": "32x32x3-32c3BN-32c3BN-mp2-64c3BN-64c3BN-mp2-512FC-10FC",
    "rueckauer-cifar-avg": "32x32x3-32c3BN-32c3BN-p2-64c3BN-64c3BN-p2-512FC-10FC",
    "bn-cnn": "16c3BN-p2-32c3BN-p2-64c3BN-p2-64FC-10FC",
    "tiny": "4c3-p2-8c3-p2-10FC",
}


def resolve_arch(arch_or_spec: str) -> tuple[str, str]:
    """``(arch name, spec)``: a zoo name gives its spec; anything else is taken as a spec ("custom")."""
    if arch_or_spec in ZOO:
        return arch_or_spec, ZOO[arch_or_spec]
    from bioconv.ann.spec import parse_spec

    try:
        parse_spec(arch_or_spec)
    except ValueError as exc:
        raise ValueError(f"unknown architecture {arch_or_spec!r}: not a zoo name ({', '.join(sorted(ZOO))}) "
                         f"and not a valid spec ({exc})") from None
    return "custom", arch_or_spec
