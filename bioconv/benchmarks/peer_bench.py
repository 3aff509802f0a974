"""``bioconv bench peer``: bioconv's torch engine side by side with SpikingJelly's ann2snn, same network and job.

Both start from the same trained checkpoint (``--ckpt``, default ``runs/ann/cnn7-mnist.pt``)
and the same MNIST test images, and run the same job: IF neurons with reset by
subtraction, max-norm conversion on ``--calib`` training images, T = ``--steps`` steps of
1 ms, batch ``--batch``, ``--workers`` threads, with

* analog input (SpikingJelly feeds the image every step; bioconv ``coding="current"``,
  the first layer receives :math:`\\tau\\sum_i w_i r_i` as a constant current), and
* Bernoulli input (SpikingJelly: one Bernoulli sample of the pixel intensities per step;
  bioconv ``coding="bernoulli"``).

SpikingJelly: ``ann2snn.Converter(RateCodingRecipe(mode="max"))`` (IFNode, reset by
subtraction, threshold 1 after max scaling, float32), classification by the summed outputs.
bioconv: :func:`bioconv.normalize.data_based_norm` (max norm, target rate 1000 Hz = one
spike per step, input 1000 Hz), IF subtract with delta synapses, the torch engine's fused
kernel on the CPU, count readout, once in float64 (Brian2's spike counts) and once in float32
(SpikingJelly's precision). Each engine first runs one warm-up batch, then the whole job
``--repeats`` times; the best run's images/s is reported (as :mod:`timeit` does), for both
engines alike. Prints the accuracies and images/s and the speed ratios. Needs the ``peer`` extra
(``pip install spikingjelly``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _best_rate(run, n_images: int, repeats: int) -> tuple[float, float]:
    """Accuracy and images/s of ``run()`` (which returns the accuracy): the best of ``repeats`` timed runs."""
    best, acc = float("inf"), float("nan")
    for _ in range(max(1, int(repeats))):
        start = time.perf_counter()
        acc = run()
        best = min(best, time.perf_counter() - start)
    return acc, n_images / best


def _spikingjelly(model, calib: np.ndarray, images: np.ndarray, labels: np.ndarray, steps: int, batch: int,
                  bernoulli: bool, repeats: int = 3, seed: int = 0) -> tuple[float, float]:
    import torch
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.ann2snn import Converter, RateCodingRecipe

    loader = [(torch.as_tensor(calib[k:k + 100], dtype=torch.float32), torch.zeros(len(calib[k:k + 100])))
              for k in range(0, len(calib), 100)]
    snn = Converter(RateCodingRecipe(dataloader=loader, mode="max")).convert(model).eval()

    def run(imgs: np.ndarray, labs: np.ndarray) -> float:
        gen = torch.Generator().manual_seed(seed)
        correct = 0
        with torch.no_grad():
            for k in range(0, len(imgs), batch):
                x = torch.as_tensor(imgs[k:k + batch], dtype=torch.float32)
                functional.reset_net(snn)
                out = 0
                for _ in range(steps):
                    inp = torch.bernoulli(x.clamp(0, 1), generator=gen) if bernoulli else x
                    out = out + snn(inp)
                correct += int((out.argmax(1).numpy() == labs[k:k + batch]).sum())
        return correct / len(imgs)

    run(images[:batch], labels[:batch])  # warm-up (oneDNN primitives, allocator)
    return _best_rate(lambda: run(images, labels), len(images), repeats)


def _bioconv(model, meta, calib: np.ndarray, images: np.ndarray, labels: np.ndarray, steps: int, batch: int,
             coding: str, dtype: str = "float64", repeats: int = 3) -> tuple[float, float]:
    from brian2 import Hz, ms

    from bioconv import normalize
    from bioconv.engines.torch import simulate
    from bioconv.from_torch import from_torch
    from bioconv.neurons import IF
    from bioconv.pool_folding import prepare_pools
    from bioconv.simulation import SimConfig
    from bioconv.synapses import Delta

    graph = prepare_pools(from_torch(model, meta["input_shape"]), "fold")
    stats = normalize.activation_stats(graph, calib)
    graph = normalize.data_based_norm(graph, stats, percentile=None, target_rate=1000 * Hz, input_rate=1000 * Hz,
                                      neuron=IF(reset="subtract"), synapse=Delta(), dt=1 * ms)
    config = SimConfig(duration=steps * ms, dt=1 * ms, coding=coding)
    simulate(graph, images[:batch], labels[:batch], config, dtype=dtype, progress=False)  # warm-up (kernel load)
    return _best_rate(lambda: simulate(graph, images, labels, config, batch_size=batch, dtype=dtype,
                                       progress=False).accuracy, len(images), repeats)


def main(args: argparse.Namespace) -> int:
    import torch

    try:
        import spikingjelly  # noqa: F401
    except ImportError:
        raise ValueError("bioconv bench peer needs SpikingJelly: pip install 'bioconv[peer]' (or spikingjelly)") from None
    from bioconv.ann import load_checkpoint
    from bioconv.benchmarks.brian2_bench import DEFAULT_CKPT
    from bioconv.data import load_dataset, subset

    ckpt = args.ckpt or str(DEFAULT_CKPT)
    model, meta = load_checkpoint(ckpt)
    torch.set_num_threads(int(args.workers))
    test = subset(load_dataset(meta["dataset"], "test", args.data_dir), args.n)
    calib = load_dataset(meta["dataset"], "train", args.data_dir).images[: int(args.calib)]
    steps, batch = int(args.steps), int(args.batch)
    print(f"checkpoint {ckpt}; {len(test.images)} test images, T = {steps} steps, batch {batch}, "
          f"{torch.get_num_threads()} threads; IF reset by subtraction, max norm on {len(calib)} train images")
    print(f"{'input':10s} {'engine':12s} {'accuracy':>9s} {'img/s':>9s}")
    for label, coding in (("analog", "current"), ("bernoulli", "bernoulli")):
        sj_acc, sj_rate = _spikingjelly(model, calib, test.images, test.labels, steps, batch, coding == "bernoulli",
                                        args.repeats)
        print(f"{label:10s} {'spikingjelly':12s} {sj_acc:9.4f} {sj_rate:9.1f}", flush=True)
        for dtype in ("float64", "float32"):
            bc_acc, bc_rate = _bioconv(model, meta, calib, test.images, test.labels, steps, batch, coding, dtype,
                                       args.repeats)
            name = f"bioconv {dtype[-2:]}"
            print(f"{label:10s} {name:12s} {bc_acc:9.4f} {bc_rate:9.1f}   ({bc_rate / sj_rate:.2f}x SpikingJelly)",
                  flush=True)
    return 0
