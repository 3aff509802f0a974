r"""The single-core ceiling of synaptic propagation: a small C loop of the network's event pattern.

For every spiking layer the generated C program holds the weights and the target state
``v`` and, for each presynaptic spike, adds the weight to every target it reaches:

- ``Conv2d``: the weight-shared loop of the procedural template (targets and kernel
  element from the geometry, constants compiled in);
- ``Dense``: ``v[j] += W[j, i]`` for all outputs ``j``;
- ``AvgPool2d``: the one output whose window holds the input.

Spikes are Bernoulli trains with the per-neuron rates the simulation measured (input:
the encoded trains), so the loop sees the same neurons, rates and geometry, with nothing
else (no state update, thresholds, monitors). It is compiled with the flags of the
standalone build and timed with the process CPU clock; the ceiling is
:math:`\text{events} / \text{CPU seconds}` (best of ``repeats``).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from bioconv import ir


def _layer_code(k: int, layer: ir.Layer) -> tuple[str, str, int, int]:
    """(declarations, propagation body for pre index ``pre``, n_pre, n_post) of spiking layer ``k``."""
    n_pre, n_post = int(np.prod(layer.input_shape)), int(np.prod(layer.output_shape))
    if isinstance(layer, ir.Conv2d):
        from bioconv.engines.convsyn import ConvGeometry

        g = ConvGeometry.from_layer(layer)
        size = g.kernel_size
        body = f"""
        const int ci = pre / {g.h * g.w}, yx = pre - ci * {g.h * g.w};
        const int y = yx / {g.w} + {g.py}, x = yx - (yx / {g.w}) * {g.w} + {g.px};
        const int ay = y - {g.kh - 1}, ax = x - {g.kw - 1};
        const int oy0 = ay <= 0 ? 0 : (ay + {g.sy - 1}) / {g.sy}, ox0 = ax <= 0 ? 0 : (ax + {g.sx - 1}) / {g.sx};
        const int oy1 = y / {g.sy} < {g.ho - 1} ? y / {g.sy} : {g.ho - 1};
        const int ox1 = x / {g.sx} < {g.wo - 1} ? x / {g.sx} : {g.wo - 1};
        for (int co = 0; co < {g.c_out}; co++) {{
            const int kb = (co * {g.c_in} + ci) * {g.kh};
            for (int oy = oy0; oy <= oy1; oy++) {{
                const int kr = (kb + y - {g.sy} * oy) * {g.kw} + x, pr = (co * {g.ho} + oy) * {g.wo};
                for (int ox = ox0; ox <= ox1; ox++) v{k}[pr + ox] += w{k}[kr - {g.sx} * ox];
            }}
        }}"""
    elif isinstance(layer, ir.Dense):
        size = n_pre * n_post
        body = f"for (int j = 0; j < {n_post}; j++) v{k}[j] += w{k}[j * {n_pre} + pre];"
    elif isinstance(layer, ir.AvgPool2d):
        c, h, w = layer.input_shape
        _, ho, wo = layer.output_shape
        (kh, kw), (sy, sx) = layer.kernel_size, layer.stride
        if (kh, kw) != (sy, sx):
            raise ValueError(f"layer {layer.name!r}: the ceiling loop handles non-overlapping pools only")
        size = 1
        body = f"""
        const int c = pre / {h * w}, yx = pre - c * {h * w}, oy = (yx / {w}) / {sy}, ox = (yx % {w}) / {sx};
        if (oy < {ho} && ox < {wo}) v{k}[(c * {ho} + oy) * {wo} + ox] += w{k}[0];"""
    else:
        raise ValueError(f"no ceiling loop for layer type {type(layer).__name__}")
    decl = f"static double w{k}[{size}]; static double v{k}[{n_post}];"
    return decl, body, n_pre, n_post


def c_source(graph: ir.Graph) -> str:
    """The C program: ``./ceiling SPIKES REPEATS`` prints ``cpu_seconds`` of the best repeat."""
    layers = graph.spiking_layers
    decls, funcs, calls = [], [], []
    for k, layer in enumerate(layers):
        decl, body, _, _ = _layer_code(k, layer)
        decls.append(decl)
        funcs.append(f"static void propagate{k}(const int pre) {{ {body} }}")
        calls.append(f"            case {k}: for (int e = 0; e < n; e++) propagate{k}(p[e]); break;")
    init = "\n".join(f"    for (size_t q = 0; q < sizeof(w{k}) / sizeof(double); q++) w{k}[q] = 1e-3 * (q % 7);"
                     for k in range(len(layers)))
    sums = " + ".join(f"v{k}[0]" for k in range(len(layers)))
    return f"""#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
{chr(10).join(decls)}
{chr(10).join(funcs)}
static double cpu(void) {{ struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }}
int main(int argc, char **argv) {{
    FILE *f = fopen(argv[1], "rb");
    fseek(f, 0, SEEK_END); long bytes = ftell(f); fseek(f, 0, SEEK_SET);
    int32_t *buf = (int32_t *)malloc(bytes);
    if (fread(buf, 1, bytes, f) != (size_t)bytes) return 1;
    fclose(f);
    const long words = bytes / 4;
{init}
    double best = 1e300;
    for (int r = 0; r < atoi(argv[2]); r++) {{
        const double start = cpu();
        for (long q = 0; q < words;) {{
            const int layer = buf[q], n = buf[q + 1];
            const int32_t *p = buf + q + 2;
            switch (layer) {{
{chr(10).join(calls)}
            }}
            q += 2 + n;
        }}
        const double s = cpu() - start;
        if (s < best) best = s;
    }}
    printf("%.9f %g\\n", best, {sums});
    return 0;
}}
"""


def spike_stream(graph: ir.Graph, input_trains: np.ndarray, rates_per_step: dict, n_steps: int, seed: int = 0):
    """(int32 stream ``layer, n, idx...`` per step and layer, events) for ``n_steps`` steps.

    ``input_trains`` (steps, n_in) drives layer 0; layer ``k > 0`` is driven by Bernoulli
    spikes of layer ``k-1`` with per-step probabilities ``rates_per_step[name of layer k-1]``.
    """
    from bioconv.connectivity import layer_synapses
    from bioconv.engines.convsyn import ConvGeometry

    rng = np.random.default_rng(seed)
    layers = graph.spiking_layers
    degrees = [ConvGeometry.from_layer(l).out_degree() if isinstance(l, ir.Conv2d)
               else np.bincount(layer_synapses(l).i, minlength=int(np.prod(l.input_shape))) for l in layers]
    chunks, events = [], 0
    for step in range(n_steps):
        for k, layer in enumerate(layers):
            if k == 0:
                idx = np.flatnonzero(input_trains[step % len(input_trains)])
            else:
                p = rates_per_step[layers[k - 1].name]
                idx = np.flatnonzero(rng.random(p.shape) < p)
            chunks.append(np.concatenate([[k, idx.size], idx]).astype(np.int32))
            events += int(degrees[k][idx].sum())
    return np.concatenate(chunks), events


def measure(graph: ir.Graph, input_trains: np.ndarray, rates_per_step: dict, n_steps: int,
            flags: list[str], repeats: int = 3) -> dict:
    """Compile and run the ceiling loop; ``{"events", "cpu_s", "events_per_s", "compile_s"}``."""
    import time

    stream, events = spike_stream(graph, input_trains, rates_per_step, n_steps)
    with tempfile.TemporaryDirectory() as tmp:
        src, exe, data = Path(tmp) / "ceiling.c", Path(tmp) / "ceiling", Path(tmp) / "spikes.bin"
        src.write_text(c_source(graph))
        stream.tofile(data)
        start = time.perf_counter()
        cflags = [f for f in flags if f != "-std=c++17"]
        subprocess.run(["gcc", *cflags, str(src), "-o", str(exe)], check=True)
        compile_s = time.perf_counter() - start
        out = subprocess.run([str(exe), str(data), str(repeats)], check=True, capture_output=True, text=True).stdout
    cpu_s = float(out.split()[0])
    return {"events": events, "cpu_s": cpu_s, "events_per_s": events / cpu_s, "compile_s": compile_s}
