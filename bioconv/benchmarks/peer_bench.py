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
(SpikingJelly's precision). Each engine first runs one warm-up batch; then the whole job runs
``--repeats`` rounds, each round timing SpikingJelly, bioconv float64 and bioconv float32 one
after the other, and each engine's best round is reported (as :mod:`timeit` does). Interleaving
the engines exposes them to the same drift of a shared machine's speed, so the ratios compare
like with like. It also favours SpikingJelly: alone in a fresh process, glibc maps and unmaps
its per-step tensors of a few MB and every step pays the page faults; once bioconv's larger
arrays have been freed, glibc's dynamic mmap threshold lies above those sizes and the faults
stop (2026-12-01, default job: 31.6 images/s alone, 41.4 with the threshold fixed at 64 MB).
Prints the accuracies and images/s and the speed ratios. Needs the ``peer`` extra
(``pip install spikingjelly``).
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np


Job = Callable[[np.ndarray, np.ndarray], float]  # (images, labels) -> accuracy


def _spikingjelly(model, calib: np.ndarray, steps: int, batch: int, bernoulli: bool, seed: int = 0) -> Job:
    """SpikingJelly's ann2snn conversion of ``model`` (max norm on ``calib``) and its classification job."""
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

    return run


def _bioconv(model, meta, calib: np.ndarray, steps: int, batch: int, coding: str, dtype: str = "float64") -> Job:
    """bioconv's conversion of ``model`` (max norm on ``calib``, IF subtract, delta synapses) and
    its classification job on the torch engine's fused kernel."""
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
    return lambda imgs, labs: simulate(graph, imgs, labs, config, batch_size=batch, dtype=dtype,
                                       progress=False).accuracy


def interleaved(jobs: dict[str, Job], images: np.ndarray, labels: np.ndarray, batch: int,
                repeats: int = 3) -> dict[str, tuple[float, float]]:
    """Accuracy and images/s of each job: one warm-up batch each (kernel load, oneDNN primitives,
    allocator), then ``repeats`` rounds that time every job once, in order; each job's best round."""
    for job in jobs.values():
        job(images[:batch], labels[:batch])
    best = {name: float("inf") for name in jobs}
    acc = {name: float("nan") for name in jobs}
    for _ in range(max(1, int(repeats))):
        for name, job in jobs.items():
            start = time.perf_counter()
            acc[name] = job(images, labels)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: (acc[name], len(images) / best[name]) for name in jobs}


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
          f"{torch.get_num_threads()} threads; IF reset by subtraction, max norm on {len(calib)} train images; "
          f"engines interleaved, best of {args.repeats} rounds")
    print(f"{'input':10s} {'engine':12s} {'accuracy':>9s} {'img/s':>9s}")
    for label, coding in (("analog", "current"), ("bernoulli", "bernoulli")):
        jobs = {"spikingjelly": _spikingjelly(model, calib, steps, batch, coding == "bernoulli")}
        for dtype in ("float64", "float32"):
            jobs[f"bioconv {dtype[-2:]}"] = _bioconv(model, meta, calib, steps, batch, coding, dtype)
        result = interleaved(jobs, test.images, test.labels, batch, args.repeats)
        sj_rate = result["spikingjelly"][1]
        for name, (acc, rate) in result.items():
            ratio = "" if name == "spikingjelly" else f"   ({rate / sj_rate:.2f}x SpikingJelly)"
            print(f"{label:10s} {name:12s} {acc:9.4f} {rate:9.1f}{ratio}", flush=True)
    return 0
