"""The ``rerund`` command line: one entry point, one module per command group.

Every command lives in this package, the top layer: it may import every other layer and none
imports it. Each module exposes ``register(subparsers: argparse._SubParsersAction) -> None``
and sets ``func`` on each parser (``func(args) -> int`` returns the exit code):

- ``daemon``   ``run``, ``history``
- ``demo``     ``demo`` (``make run``)
- ``policy``   ``check``, ``test``, ``schema``, and ``explain`` from ``explain``
- ``explain``  ``explain``, offline or live
- ``repro``    ``repro list|run|history``
- ``sweep``    ``sweep`` (after an outage)
- ``sandbox``  ``sandbox``

The flyte SDK itself is imported only when a command first talks to a control plane, and a
command's module only when that command is given (``_COMMANDS`` below says why).

Errors: a ``RerundError`` escaping a handler is printed as one clear message (no traceback)
and exits with status 2 (1 is reserved for "the check ran and found problems"). A mistyped
option gets the command's own usage and a "did you mean" suggestion. Output cut short by the
reader (``rerund history | head -1``) ends quietly: one ``BrokenPipeError`` handler here, for
every command.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from rerund import __version__
from rerund.core.encode import for_terminal
from rerund.errors import ConfigError, FailureInputError, PolicyError, RerundError, WorkloadError

__all__ = ["build_parser", "error_lines", "main"]

# Each command -> the module of this package that registers it; the modules' first appearance
# is the order of `rerund --help`.
#
# Why a table of names and not `from rerund.cli import daemon, demo, ...`: every `rerund`
# process would then import every command's dependency tree (the sandbox and its pytest
# fixtures for `demo`, rich for `sweep`, ...): memory the daemon (`rerund run`) never uses, and
# a slower start (bench/README.md has the figures). A command given on the line imports only its
# own module; `rerund`, `rerund --help` and an unknown command import them all. Registering a
# command is light: a handler imports the heavy modules it uses (the daemon, the flyte SDK, the
# sandbox, the SQL toolkit) when it runs (tests/cli/test_startup_imports.py). import-linter sees
# imports inside functions too; the only edges it does not see are this table's.
# tests/cli/test_dispatch.py checks the table against what each module registers.
_COMMANDS: dict[str, str] = {
    "run": "daemon",
    "history": "daemon",
    "status": "status",
    "incidents": "incidents",
    "demo": "demo",
    "check": "policy",
    "explain": "policy",
    "test": "policy",
    "schema": "policy",
    "repro": "repro",
    "sweep": "sweep",
    "suggest": "suggest",
    "sandbox": "sandbox",
    "state": "state",
}

_EPILOG = """\
examples:
  rerund sandbox --workload policies/demo/workload.yaml      # a Flyte-compatible control plane
  rerund check policies/                                     # validate policy files
  rerund explain --policies policies/ --failure policies/failures/connection-reset.yaml
                                                             # why would this be retried?
  rerund run --config rerund.example.yaml                    # the daemon
  rerund status --config rerund.example.yaml                 # what is in flight, and why
  rerund sweep --config rerund.example.yaml --policies policies/outage/ --since 2h --dry-run
                                                             # after an outage
  rerund demo                                                # sandbox + daemon, as `make run`
  rerund status --config .rerund/demo.yaml                   # ... and what the demo is doing

Run `rerund COMMAND --help` for the options of a command.
"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with a known ``command``, only that command's module is registered."""
    parser = argparse.ArgumentParser(
        prog="rerund",
        description="Automatic, explainable, exactly-once retries and reruns for Flyte 2.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rerund {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = [_COMMANDS[command]] if command in _COMMANDS else list(dict.fromkeys(_COMMANDS.values()))
    for name in names:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def _unknown(parser: argparse.ArgumentParser, args: argparse.Namespace, extras: list[str]) -> None:
    """Exit 2 with the command's usage and, for a mistyped option, the closest real one."""
    sub = parser
    while True:  # the deepest sub-command given (`repro run` inside `repro`)
        subs = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, subs[0].dest, None) if subs else None
        if not subs or chosen not in subs[0].choices:
            break
        sub = subs[0].choices[chosen]
    options = [o for action in sub._actions for o in action.option_strings if o.startswith("--")]
    first = extras[0]
    close = difflib.get_close_matches(first.split("=", 1)[0], options, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    sub.error(f"unrecognized argument{'s' if len(extras) > 1 else ''}: {' '.join(extras)}{hint}")


def error_lines(exc: RerundError) -> list[str]:
    """A failed command's message as terminal lines, control characters written visibly
    (``for_terminal``). Only the line breaks rerund puts there itself are kept: between the
    located problems of a policy, workload or failure file (each problem one line, whatever it
    quotes) and between the settings problems of a ``ConfigError``; any other message is one
    line, so a control plane's message cannot forge a second one."""
    if isinstance(exc, PolicyError | WorkloadError | FailureInputError):
        head = [for_terminal(exc.summary, keep="\n")] if exc.summary else []
        return head + [for_terminal(p) for p in exc.problems]
    return [for_terminal(exc, keep="\n" if isinstance(exc, ConfigError) else "")]


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv else None)
    args, extras = parser.parse_known_args(argv)
    if extras:
        _unknown(parser, args, extras)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code = func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): what it wanted was printed. Point stdout at
        # /dev/null so the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except RerundError as exc:
        sys.stdout.flush()  # what was printed comes first, in whole lines, when both share a pipe
        print(f"rerund {args.command}: " + "\n".join(error_lines(exc)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


def console() -> NoReturn:
    """The ``rerund`` command: ``main``, then the process ends with its code without finalizing
    the interpreter once the flyte SDK was loaded. The SDK's transport (pyqwest: Rust, tokio)
    keeps native threads that can abort the process (SIGABRT, exit 134, no message) while the
    interpreter is torn down: 1 in 80 one-shot commands against an unreachable control plane
    on a loaded machine, after the command had printed its answer. What ``main`` wrote is
    flushed and the log handlers are closed first, so nothing printed is lost."""
    try:
        code = main()
    except SystemExit as exc:  # argparse: --help, --version, a usage error
        if "flyte" not in sys.modules or not (exc.code is None or isinstance(exc.code, int)):
            raise
        code = exc.code or 0
    if "flyte" not in sys.modules:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    console()
