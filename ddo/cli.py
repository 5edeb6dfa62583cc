"""The ``ddo`` command: a parser built from the command registry, and ``main``.

Sub-commands come from the command registry (``train``, ``sample``, ``plugins`` and whatever
plugins add); flags are parsed in :mod:`ddo.arguments`, commands run in :mod:`ddo.commands` (or a
plugin's module). Bad input is reported as one line on stderr with exit code 2.
"""
from __future__ import annotations

import sys

from . import plugins
from .allocator import tune_malloc
from .arguments import Parser
from .errors import UserError
from .registry import DuplicateKeyError, UnknownKeyError


def build_parser(host) -> Parser:
    parser = Parser(prog="ddo", description="Denoising diffusion operators: train, sample, and plugins.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in host.commands.keys():
        add_arguments, run, help_text = host.commands.get(name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_run=run, _host=host)
        add_arguments(p)
    return parser


def main(argv=None, extra_plugins=(), tune_allocator: bool = False) -> int:
    """Run ``ddo`` with ``argv``; returns the exit code. ``extra_plugins``: plugin objects registered
    beside the installed ones (a script's own datasets or models, say). ``tune_allocator``: tune
    glibc's malloc for this process first (:func:`ddo.allocator.tune_malloc`), as the ``ddo``
    command does; off by default so that a caller's process is left as it was."""
    try:
        if tune_allocator:
            tune_malloc()
        host = plugins.load_host(extra_plugins=extra_plugins)
        parser = build_parser(host)
        try:
            args = vars(parser.parse_args(argv))
        except SystemExit as e:  # --help (0) or a usage error (2), already printed
            return int(e.code or 0)
        run = args.pop("_run")
        return run(args)
    except (UserError, UnknownKeyError, DuplicateKeyError) as e:
        print(f"ddo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ddo: interrupted", file=sys.stderr)
        return 130


def console_main() -> None:
    """The ``ddo`` command and ``python -m ddo``."""
    sys.exit(main(tune_allocator=True))
