"""The ``costcl`` command.  Each command parses, calls one library function, prints.

Bad input anywhere is a :class:`~costmodel.errors.CostclError`; :func:`run`
prints it as one line on stderr and exits with status 2, as it does for
click's own usage errors.  Heavy imports happen inside the commands, so
``costcl --help`` stays fast.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading

from cli import cost_commands, budget_commands, train_commands, calibrate_commands, cache_commands, sweep_commands  # noqa: F401  (they register)
from cli.app import CostclInterrupt, app
from costmodel.errors import CostclError


def _click_exceptions():  # noqa: ANN202
    """typer vendors click (typer._click) in recent releases; older ones use click."""
    try:
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click import exceptions
    return exceptions


def _user_code_path() -> None:
    """A model factory or method plugin in the current folder imports as ``python -m``
    would find it; appended, so it never shadows an installed module."""
    try:
        here = os.getcwd()
    except OSError:
        return
    if here not in sys.path:
        sys.path.append(here)


def run(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors with exit status 2, never a traceback."""
    exc = _click_exceptions()
    no_args = getattr(exc, "NoArgsIsHelpError", ())
    aborts = tuple(c for c in (getattr(exc, "Abort", None), KeyboardInterrupt) if c)
    exits = getattr(exc, "Exit", ())
    argv = sys.argv[1:] if argv is None else list(argv)
    _user_code_path()
    try:
        with cache_commands.answering(argv) as answered:  # a repeated estimate: no torch, no parsing
            if not answered:
                app(args=argv, standalone_mode=False)
    except CostclError as e:
        print(f"costcl: error: {e}", file=sys.stderr)
        sys.exit(2)
    except no_args:
        sys.exit(0)
    except exc.UsageError as e:
        name = e.ctx.command_path if e.ctx else "costcl"
        print(f"costcl: error: {e.format_message()} (see: {name} --help)", file=sys.stderr)
        sys.exit(2)
    except CostclInterrupt as e:
        print(f"costcl: {e}", file=sys.stderr)
        sys.exit(130)
    except aborts:
        print("costcl: interrupted", file=sys.stderr)
        sys.exit(130)
    except exits as e:
        sys.exit(e.exit_code)
    except BrokenPipeError:  # `costcl ... | head`: the reader left; so do we, quietly
        sys.stderr.close()
        sys.exit(0)


def main() -> None:
    """The ``costcl`` program: :func:`run`, then out without the interpreter's teardown."""
    run()
    _exit_now()


def _exit_now() -> None:
    """Once torch is imported, a normal exit frees every module's objects one by one:
    0.5 s of a cold ``costcl estimate`` here.  The work is done and written atomically, so
    run the exit handlers (temporary folders, worker pools, logging), flush the output
    and leave.  With another thread still running, exit normally (it is joined)."""
    if "torch" not in sys.modules or threading.active_count() > 1:
        return
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # the reader left: nothing more to say
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
