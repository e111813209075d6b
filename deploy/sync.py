"""Keep the files kustomize needs inside deploy/kubernetes/base identical to their one source.

kustomize refuses to read files outside a kustomization's directory ("security; file ... is not
in or below ..."), and ``kubectl apply -k`` has no flag to allow it. So two files of the base are
generated from the repository's sources, and tests/deploy fails (naming this command) when a
committed copy differs from what this script writes:

- ``base/prometheusrule.yaml`` from ``deploy/prometheus/rules.yaml`` — the alert rules that
  promtool checks and unit-tests, indented verbatim (comments included) under ``spec:`` of a
  prometheus-operator ``PrometheusRule``, so ``spec.groups`` parses to exactly the file's groups;
- ``base/policies/<name>.yaml`` from each ``policies/library/<name>.yaml`` — the policy library,
  byte for byte, as the base's policies (replace or extend them in your overlay); a file in
  ``base/policies`` that is no longer in the library is removed.

Usage::

    python deploy/sync.py          # rewrite the generated files
    python deploy/sync.py --check  # exit 1, naming the stale files, if any is out of date
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
REPO = DEPLOY.parent
BASE = DEPLOY / "kubernetes" / "base"

PROMETHEUSRULE_HEADER = """\
# GENERATED from deploy/prometheus/rules.yaml by `python deploy/sync.py`: do not edit here.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: rerund
  labels:
    app.kubernetes.io/name: rerund
    app.kubernetes.io/component: alerts
spec:
"""


def prometheusrule(rules_text: str) -> str:
    """The PrometheusRule text for a Prometheus rule file: its lines from ``groups:`` on, indented by two.

    The file's leading comment lines are dropped; every later line, comments and block scalars
    included, is kept byte for byte, so ``spec.groups`` parses to exactly the file's ``groups``.
    """
    lines = rules_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    return PROMETHEUSRULE_HEADER + "".join(f"  {line}\n" if line else "\n" for line in lines[start:])


def same(text: str) -> str:
    """A byte-for-byte copy."""
    return text


LIBRARY = REPO / "policies" / "library"

# (source, generated file, how the generated text is made from the source's text)
GENERATED: tuple[tuple[Path, Path, Callable[[str], str]], ...] = (
    (DEPLOY / "prometheus" / "rules.yaml", BASE / "prometheusrule.yaml", prometheusrule),
    *((source, BASE / "policies" / source.name, same) for source in sorted(LIBRARY.glob("*.yaml"))),
)


def stale() -> list[tuple[Path, Path, str | None]]:
    """The generated files whose committed text differs from their source: (source, target, wanted
    text); wanted is None for a file in ``base/policies`` whose library file is gone."""
    out: list[tuple[Path, Path, str | None]] = []
    for source, target, make in GENERATED:
        wanted = make(source.read_text(encoding="utf-8"))
        if not target.exists() or target.read_text(encoding="utf-8") != wanted:
            out.append((source, target, wanted))
    generated = {target for _, target, _ in GENERATED}
    for target in sorted((BASE / "policies").glob("*.yaml")):
        if target not in generated:
            out.append((LIBRARY, target, None))
    return out


def main(argv: list[str]) -> int:
    todo = stale()
    if "--check" in argv:
        for source, target, wanted in todo:
            problem = "is not in" if wanted is None else "is out of date with"
            print(
                f"{target.relative_to(REPO)} {problem} {source.relative_to(REPO)}: "
                "run `python deploy/sync.py` and commit the result",
                file=sys.stderr,
            )
        return 1 if todo else 0
    for _, target, wanted in todo:
        if wanted is None:
            target.unlink()
            print(f"removed {target.relative_to(REPO)}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(wanted, encoding="utf-8")
        print(f"wrote {target.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
