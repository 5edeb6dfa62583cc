"""The ``ddo`` command: a parser built from the command registry, and ``main``.

Sub-commands come from the command registry (``train``, ``sample``, ``plugins`` and whatever
plugins add); flags are parsed in :mod:`ddo.arguments`, commands run in :mod:`ddo.commands` (or a
plugin's module). Bad input is reported as one line on stderr with exit code 2; a computation that diverged (values that are not
finite) as one line with exit code 1, and so is a file the machine would not let us write (disk full,
permission denied, read-only file system: the input was fine; the previous file is left as it was) and
an allocation refused for lack of memory that the guards of :mod:`ddo.memory` did not foresee.
"""
from __future__ import annotations

import errno
import sys

from . import plugins
from .allocator import tune_malloc
from .arguments import Parser
from .checkpoint import WRITE_FIXES
from .errors import NumericalError, UserError, WriteError, one_line
from .registry import DuplicateKeyError, UnknownKeyError


# what a full disk, a quota or a permission change does to a write that was expected to work
ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


def out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is an allocation the allocator refused (CPU or CUDA)."""
    text = str(e)
    return isinstance(e, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()


def build_parser(host) -> Parser:
    parser = Parser(prog="ddo", description="Denoising diffusion operators: train, sample, and plugins.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in host.commands.keys():
        add_arguments, run, help_text = host.commands.get(name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_run=run)
        add_arguments(p, host)
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
        return run(args, host)
    except (UserError, UnknownKeyError, DuplicateKeyError) as e:
        print(one_line(f"ddo: error: {e}"), file=sys.stderr)
        return 2
    except (NumericalError, WriteError) as e:
        print(one_line(f"ddo: error: {e}"), file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:  # a path given on the command line, checked by the file system
            print(one_line(f"ddo: error: {str(e.filename)[:60]}...: a path longer than the file system allows; "
                           "give a shorter one"), file=sys.stderr)
            return 2
        if e.errno not in ENVIRONMENT_ERRNOS:
            raise
        # a file operation outside atomic_write (an appended log line) that the machine refused
        print(one_line(f"ddo: error: {e.filename or 'a file'}: {e.strerror or e}; "
                       f"{WRITE_FIXES.get(e.errno, 'check the disk')}"), file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as e:
        if not out_of_memory(e):
            raise
        # an allocation the guards (ddo.memory) did not foresee, refused by the allocator
        print("ddo: error: ran out of memory (an allocation was refused); lower --resolution, --batch-size, "
              "--num-samples or the model's sizes", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ddo: interrupted", file=sys.stderr)
        return 130


def console_main() -> None:
    """The ``ddo`` command and ``python -m ddo``."""
    sys.exit(main(tune_allocator=True))
