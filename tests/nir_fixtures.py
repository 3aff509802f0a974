"""Small convolutional SNNs built, simulated and exported to NIR by snnTorch (for tests/test_nir.py).

The networks: conv 5×5 (8) → neurons → avgpool 2 → conv 5×5 (16) → neurons → avgpool 2 →
flatten → linear (10) → neurons, on 28×28 inputs, in float64. ``kind``:

* ``"if_subtract"`` — ``Leaky(beta=1, reset_mechanism="subtract")`` without biases: the case in
  which snnTorch and bioconv agree spike for spike (after one step of delay per layer);
* ``"lif_zero"`` — ``Leaky(beta=0.9, reset_mechanism="zero")`` with biases;
* ``"cuba"`` — ``Synaptic(alpha=0.8, beta=0.9, reset_mechanism="zero")`` (NIR CubaLIF).

The snnTorch exporter writes time constants for its own ``dt = 1e-4`` s.
"""

from __future__ import annotations

import numpy as np
import torch

SNNTORCH_DT_S = 1e-4
KINDS = ("if_subtract", "lif_zero", "cuba")
GAINS = {"if_subtract": 1.5, "lif_zero": 2.5, "cuba": 2.5}  # weight scale: every layer spikes


def _neurons(kind: str, shape: tuple[int, ...]):
    import snntorch as snn

    ones = torch.ones(shape)
    if kind == "cuba":
        return snn.Synaptic(alpha=0.8 * ones, beta=0.9 * ones, threshold=ones, init_hidden=True, reset_mechanism="zero")
    beta, reset = (1.0, "subtract") if kind == "if_subtract" else (0.9, "zero")
    return snn.Leaky(beta=beta * ones, threshold=ones, init_hidden=True, reset_mechanism=reset)


def build_net(kind: str, seed: int = 0, gain: float | None = None) -> torch.nn.Sequential:
    """The snnTorch network of ``kind`` with seeded random weights scaled by ``gain`` (default GAINS[kind]; float64)."""
    if kind not in KINDS:
        raise ValueError(kind)
    gain = GAINS[kind] if gain is None else gain
    torch.manual_seed(seed)
    bias = kind != "if_subtract"
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(1, 8, 5, bias=bias), _neurons(kind, (8, 24, 24)), nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 5, bias=bias), _neurons(kind, (16, 8, 8)), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10, bias=bias), _neurons(kind, (10,)),
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(gain)
    return net.double()


def export(net: torch.nn.Sequential):
    """snnTorch's own NIR export of ``net`` (a ``nir.NIRGraph``)."""
    from snntorch.export_nir import export_to_nir

    with np.errstate(divide="ignore"):  # beta = 1 exports tau = dt/(1-beta) = inf
        return export_to_nir(net.float(), torch.zeros(1, 1, 28, 28), ignore_dims=[0])


def simulate(net: torch.nn.Sequential, trains: np.ndarray) -> list[np.ndarray]:
    """snnTorch's simulation: per spiking layer the spikes (n_steps, N, n) of the input ``trains`` (N, n_steps, 784)."""
    import snntorch as snn

    net = net.double()
    for m in net:
        if isinstance(m, (snn.Leaky, snn.Synaptic)):
            m.reset_mem()
    n, steps = trains.shape[:2]
    x = torch.as_tensor(trains, dtype=torch.float64).reshape(n, steps, 1, 28, 28)
    out: list[list[np.ndarray]] = []
    with torch.no_grad():
        for t in range(steps):
            h, k = x[:, t], 0
            for m in net:
                h = m(h).double()
                if isinstance(m, (snn.Leaky, snn.Synaptic)):
                    if t == 0:
                        out.append([])
                    out[k].append(h.reshape(n, -1).numpy().astype(np.int8))
                    k += 1
    return [np.stack(layer) for layer in out]


def shifted_counts(spikes: list[np.ndarray], n_steps: int) -> list[np.ndarray]:
    """Counts of layer l (1-based) over its first ``n_steps - l`` steps: what bioconv's layer l
    counts in ``n_steps`` steps, given its one step of delay per layer."""
    return [s[: n_steps - (l + 1)].sum(axis=0).astype(np.int64) for l, s in enumerate(spikes)]
