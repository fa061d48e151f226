"""The ``xke`` command line.

Each area of xke owns its subcommands in a ``commands`` module with a
``register(sub, groups)`` function: ``sub`` adds top-level commands, ``groups``
maps a group name (``data``, ``world``, ``train``, ``analyze``, ``memory``) to
the sub-parser collection of that group. Command modules import heavy
libraries (torch, transformers) inside their handlers, so ``--help`` is fast.
Errors in user input (:class:`xke.errors.XkeError`) print one clear line and
exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .errors import XkeError

COMMAND_MODULES = (
    "xke.data.commands",
    "xke.eval.commands",
    "xke.eval.general_commands",
    "xke.world.commands",
    "xke.memory.commands",
    "xke.train.commands",
    "xke.analysis.commands",
    "xke.serve.commands",
)

GROUPS = {
    "data": "check benchmark files, build training data",
    "world": "build the toy multilingual world and its tiny model",
    "memory": "manage a persistent edit memory",
    "train": "train X-KDE models (XE-IT, TL-PO, the full recipe)",
    "analyze": "geometry of edit deltas, per-layer language separation",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xke", description="Cross-lingual knowledge editing for LLMs.")
    parser.add_argument("--version", action="version", version=f"xke {__version__}")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is often fastest on shared machines)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups = {}
    for name, help_text in GROUPS.items():
        gp = sub.add_parser(name, help=help_text, description=help_text)
        groups[name] = gp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
        gp.set_defaults(func=lambda args, gp=gp: gp.print_help() or 1)
    for mod_name in COMMAND_MODULES:
        importlib.import_module(mod_name).register(sub, groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise XkeError(f"--threads must be >= 1, got {args.threads}")
            os.environ["XKE_THREADS"] = str(args.threads)
            import torch
            torch.set_num_threads(args.threads)
        from .world.provider import provide_args

        provide_args(args)   # toy-world specs -> explicit inputs (model directory, XE-IT source) where asked for
        rc = args.func(args)
    except XkeError as e:
        print(f"xke: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xke: interrupted; finished results are saved and a rerun resumes", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
