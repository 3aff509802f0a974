"""ANNs for conversion: a spec grammar, a model zoo, training, evaluation and checkpoints (needs torch).

>>> model = build_model("cnn7", input_shape=(1, 28, 28), n_classes=10)   # doctest: +SKIP

Every conv/FC layer except the last is followed by ReLU (BN, if any, sits before
the ReLU); see :mod:`bioconv.ann.spec` for the grammar and :mod:`bioconv.ann.zoo`
for the named architectures.
"""

from __future__ import annotations

from bioconv.ann.spec import build_sequential, format_spec, parse_spec
from bioconv.ann.zoo import ZOO, resolve_arch


def build_model(arch_or_spec: str, input_shape=None, n_classes: int | None = None, **activation):
    """A ``torch.nn.Sequential`` for a zoo name or spec string.

    Parameters
    ----------
    arch_or_spec
        A name from :data:`ZOO` (``mcr-mnist``, ``mcr-cifar10``, ``cnn7``,
        ``rueckauer-cifar``, ``tiny``, ...) or a spec such as ``28x28-32c3-p2-10FC``.
    input_shape
        (C, H, W) or (H, W); optional if the spec starts with an input token
        (it must agree with it otherwise).
    n_classes
        Checked against the size of the last FC layer, if given.
    activation
        ``activation``, ``levels``, ``clips`` of :func:`~bioconv.ann.spec.build_sequential`
        (a clipped ReLU sized to the spike budget, :mod:`bioconv.ann.activations`).
    """
    _, spec = resolve_arch(arch_or_spec)
    return build_sequential(parse_spec(spec), input_shape, n_classes, **activation)


from bioconv.ann.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from bioconv.ann.train import TrainResult, evaluate, train, train_and_save  # noqa: E402

__all__ = ["build_model", "load_checkpoint", "save_checkpoint", "train", "train_and_save", "evaluate",
           "TrainResult", "ZOO", "resolve_arch", "parse_spec", "format_spec"]
