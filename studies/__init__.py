"""Study scripts that regenerate the MCR-Norm paper's results and extend them (``bioconv study NAME``).

Each study module defines ``NAME``, ``grid(quick) -> list[dict]``, ``run_one(cfg) ->
DataFrame`` and ``plot(table, outdir) -> list[Path]``; :mod:`bioconv.sweep` runs the grid with
caching and :mod:`bioconv.commands.study` ties them together. Shared pieces (checkpoint →
converted graph, simulation, metrics) are in :mod:`studies.common`.
"""
