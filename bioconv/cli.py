"""The ``bioconv`` command line: one subcommand per module in :mod:`bioconv.commands`.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported lazily so ``bioconv --help`` stays fast and
the Brian2-only environment (no torch) can still run ``simulate``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = {
    "train": "Train an ANN from the model zoo on a dataset (needs torch).",
    "evaluate": "ANN test accuracy of a checkpoint (needs torch).",
    "convert": "Normalize a trained ANN and write a spiking Graph file (.bcv).",
    "simulate": "Run a converted Graph in Brian2 or the torch engine on a dataset.",
    "study": "Run a study (sweep with cached tidy tables) and draw its figure.",
    "bench": "Benchmarks that print speed and memory figures (brian2, torch).",
    "export": "Export a converted Graph (.bcv) to another format (NIR).",
    "import": "Import a NIR graph (.nir, e.g. from snnTorch or Norse) as a Graph file (.bcv).",
}
#: command names that are not module names (``import`` is a Python keyword)
MODULES = {"import": "import_nir"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bioconv",
        description="Convert trained PyTorch CNNs into biologically plausible Brian2 spiking networks.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        try:
            module = importlib.import_module(f"bioconv.commands.{MODULES.get(name, name)}")
        except ModuleNotFoundError as exc:  # e.g. torch absent in the brian2cuda env
            p = sub.add_parser(name, help=f"{help_text} [unavailable: {exc}]")
            p.set_defaults(_module=None, _missing=f"'{name}' needs the missing module {exc.name!r}; "
                           "install it (pip install -e '.[torch]') or use the main .venv")
            continue
        p = sub.add_parser(name, help=help_text, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    if args._module is None:
        print(f"bioconv {args.command}: error: {args._missing}", file=sys.stderr)
        return 2
    try:
        return int(args._module.run(args) or 0)
    except (ValueError, FileNotFoundError, MemoryError) as exc:
        logging.getLogger("bioconv").debug("error", exc_info=True)
        print(f"bioconv {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
