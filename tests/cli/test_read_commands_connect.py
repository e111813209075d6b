"""Every command that reaches the control plane takes the connection flags of ``rerund run``
(``--endpoint``, ``--org``, ``--scope``, the auth flags) and the same ``RERUND_*`` environment
variables, through one settings loader; every command that reads the ledger takes ``--state``
and ``RERUND_STATE`` (issue 28.3). Against a real sandbox; the auth flags are checked in each
command's help (the sandbox's API key needs TLS)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rerund.adapters.ledger import Ledger
from rerund.cli import build_parser, main
from rerund.sandbox.testing import SandboxHandle

pytestmark = pytest.mark.e2e

WORKLOAD = {
    "tasks": {
        "net.flaky": {
            "duration": "0.1s",
            "behaviour": ["fail"],
            "error": {
                "kind": "SYSTEM",
                "code": "ConnectionResetError",
                "message": "Connection reset by peer",
            },
        },
        "det.train": {"outputs": {"accuracy": 0.93}},
    }
}
POLICIES = """\
apiVersion: rerund/v1
policies:
  - name: transient
    match: {error: {kinds: [SYSTEM]}}
    retry: {max_attempts: 3}
reproductions:
  - name: det
    schedule: "0 3 * * *"
    source: {task: det.train}
    timeout: 1m
"""


class World:
    def __init__(self, sb: SandboxHandle, tmp: Path) -> None:
        self.sb, self.policies, self.state = sb, tmp / "policies.yaml", tmp / "rerund.db"
        self.policies.write_text(POLICIES)
        Ledger(self.state).close()
        [self.failed] = sb.launch("net.flaky")
        [reference] = sb.launch("det.train")
        sb.wait_for(reference)
        sb.wait_idle()

    def flags(self) -> list[str]:
        sb = self.sb
        return [
            "--endpoint", sb.endpoint, "--org", sb.org, "--scope", f"{sb.project}/{sb.domain}",
            "--insecure", "--policies", str(self.policies), "--state", str(self.state),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        sb = self.sb
        return {
            "RERUND_ENDPOINT": sb.endpoint,
            "RERUND_ORG": sb.org,
            "RERUND_SCOPES": f"{sb.project}/{sb.domain}",
            "RERUND_INSECURE": "true",
            "RERUND_POLICIES": str(self.policies),
            "RERUND_STATE": str(self.state),
        }


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    from rerund.sandbox.testing import start_sandbox

    with start_sandbox(WORKLOAD, time_scale=0.01) as sb:
        yield World(sb, tmp_path_factory.mktemp("world"))


# (argv of the command, given the world; its exit status; a line it prints)
COMMANDS: dict[str, tuple[Callable[[World], list[str]], int, str]] = {
    "status": (lambda w: ["status"], 0, "rerund status at "),
    "explain": (lambda w: ["explain", w.failed], 0, "decision:   rerun"),
    "repro-run": (lambda w: ["repro", "run", "det"], 0, "match: check 'det'"),
    "history": (lambda w: ["history"], 0, ""),
    "repro-history": (lambda w: ["repro", "history", "det"], 0, ""),
    "repro-list": (lambda w: ["repro", "list"], 0, "det"),
}
LEDGER_ONLY = {"history", "repro-history", "repro-list"}


@pytest.mark.parametrize("command", list(COMMANDS), ids=list(COMMANDS))
def test_each_command_connects_from_the_flags_of_rerund_run(world: World, capsys, command: str) -> None:
    argv, code, text = COMMANDS[command]
    flags = world.flags()
    if command in LEDGER_ONLY:  # no control plane: the ledger (and the policies) only
        flags = [
            f
            for i, f in enumerate(flags)
            if f in ("--state", "--policies") or flags[i - 1] in ("--state", "--policies")
        ]
    if command == "history":
        flags = flags[flags.index("--state") :]

    assert main([*argv(world), *flags]) == code, capsys.readouterr().err
    assert text in capsys.readouterr().out


@pytest.mark.parametrize("command", list(COMMANDS), ids=list(COMMANDS))
def test_each_command_connects_from_the_rerund_environment_variables(
    world: World, capsys, monkeypatch, command: str
) -> None:
    argv, code, text = COMMANDS[command]
    for name, value in world.env().items():
        monkeypatch.setenv(name, value)

    assert main(argv(world)) == code, capsys.readouterr().err
    assert text in capsys.readouterr().out


CONNECTION = ["--endpoint", "--org", "--scope", "--insecure", "--api-key-file", "--client-id",
              "--client-secret-file", "--auth-command", "--auth-command-file", "--ca-cert-file",
              "--http-proxy", "--http-proxy-file", "--config", "--state"]  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [["run"], ["sweep"], ["status"], ["explain"], ["repro", "run"], ["suggest"]],
    ids=["run", "sweep", "status", "explain", "repro-run", "suggest"],
)
def test_every_command_that_reaches_the_control_plane_documents_the_same_connection_flags(
    argv: list[str],
) -> None:
    parser = build_parser(argv[0])
    for word in argv:
        sub = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))  # type: ignore[union-attr]
        parser = sub.choices[word]
    text = parser.format_help()

    missing = [
        flag for flag in CONNECTION if flag not in text and not (argv == ["sweep"] and flag == "--state")
    ]
    assert missing == []
