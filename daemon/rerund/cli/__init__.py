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

The flyte SDK itself is imported only when a command first talks to a control plane.

Errors: a ``RerundError`` escaping a handler is printed as one clear message (no traceback)
and exits with status 2 (1 is reserved for "the check ran and found problems").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rerund import __version__
from rerund.cli import daemon, demo, policy, repro, sandbox, sweep
from rerund.errors import RerundError

__all__ = ["build_parser", "main"]

# Order is the order of `rerund --help`.
_COMMAND_MODULES = (daemon, demo, policy, repro, sweep, sandbox)

_EPILOG = """\
examples:
  rerund sandbox --workload policies/demo/workload.yaml      # a Flyte-compatible control plane
  rerund check policies/                                     # validate policy files
  rerund explain --policies policies/ --failure failure.yaml # why would this be retried?
  rerund run --config rerund.yaml                            # the daemon
  rerund sweep --config rerund.yaml --policies outage.yaml --since 2h --dry-run  # after an outage
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
    for module in _COMMAND_MODULES:
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
