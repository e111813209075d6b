"""The ``rerund`` command line: one entry point, one sub-command module per area.

Each area owns its sub-commands in its own module, which exposes
``register(subparsers: argparse._SubParsersAction) -> None`` and sets ``func`` on each parser
(``func(args) -> int`` returns the exit code). Sub-command modules import heavy dependencies
(flyte, uvicorn, ...) inside their handlers, so ``rerund --help`` stays fast.

Errors: a ``RerundError`` escaping a handler is printed as one clear message (no traceback)
and exits with status 2 (1 is reserved for "the check ran and found problems").
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rerund import __version__
from rerund.errors import RerundError

__all__ = ["build_parser", "main"]

# Order is the order of `rerund --help`.
_COMMAND_MODULES = (
    "rerund.runtime.cli",  # run, history, demo
    "rerund.policy.cli",  # check, explain, test, schema
    "rerund.runtime.repro_cli",  # repro list|run|history
    "rerund.sandbox.cli",  # sandbox
)

_EPILOG = """\
examples:
  rerund sandbox --workload policies/demo/workload.yaml      # a Flyte-compatible control plane
  rerund check policies/                                     # validate policy files
  rerund explain --policies policies/ --failure failure.yaml # why would this be retried?
  rerund run --config rerund.yaml                            # the daemon
  rerund demo                                                # sandbox + daemon, as `make run`

Run `rerund COMMAND --help` for the options of a command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rerund",
        description="Automatic, explainable, exactly-once retries and reruns for Flyte 2.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rerund {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # the area has not shipped this module
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code = func(args)
    except RerundError as exc:
        print(f"rerund {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
