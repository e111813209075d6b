"""The one YAML loader for every file rerund reads: policies, policy tests, failure documents,
settings and sandbox workloads.

Safe means more than ``safe_load``. A 539-byte file of nested aliases names 10^8 values, and
every walk over the loaded data (the duplicate-key check, pydantic, the workload's location
map) would visit each of them; a list nested a thousand deep raises ``RecursionError`` in any
recursive walk. So before a node is composed, the document's event stream (which libyaml
produces iteratively) is checked against three budgets, each with a message of its own:

- depth: at most ``MAX_DEPTH`` nested collections;
- aliases: at most ``MAX_ALIAS_VALUES`` values added by expanding aliases (an alias adds the
  size of the value it names, computed once when that value closes, so the check itself is
  linear); values written out never count here, so a long plain file is no alias problem;
- size: at most ``MAX_VALUES`` values written in the file (a bound on the memory the node tree
  and every later walk take; a larger file is split into several).

Within both budgets every later walk, recursive or not, is bounded. Construction errors that
PyYAML leaves as ``ValueError`` (a timestamp such as ``2026-02-30``, an integer of 5,000
digits) become located problems too. Every problem reads ``file:line:col: what is wrong; what
to do`` and nothing here raises anything but ``RerundError`` subclasses' problems.

Pure: text in, nodes and data out; no file or clock access. The sandbox may import it (it
imports only ``rerund.errors``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from rerund.errors import PolicyProblem

__all__ = ["MAX_ALIAS_VALUES", "MAX_DEPTH", "MAX_VALUES", "Document", "decode", "load_text"]

MAX_DEPTH = 64
MAX_ALIAS_VALUES = 100_000
MAX_VALUES = 1_000_000

_CBase: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Document:
    """One parsed YAML document: its file name, node tree and plain data."""

    file: str
    node: yaml.Node | None
    data: Any


class _Budget(Exception):
    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


def _problem(file: str, mark: Any, message: str, path: str = "") -> PolicyProblem:
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return PolicyProblem(file=file, line=line, column=column, path=path, message=message)


def _check_budgets(text: str) -> None:
    """Walk the event stream once; raise ``_Budget`` at the first event over a budget.

    Sizes: a scalar is 1, a collection 1 plus its contents, an alias the size of its anchor's
    value. Each scalar, collection and alias event is one value written (``MAX_VALUES``); an
    alias also adds its size to the values aliases add (``MAX_ALIAS_VALUES``). Iterative (an
    explicit stack), so a deep document cannot exhaust the C stack here.
    """
    anchors: dict[str, int] = {}
    stack: list[tuple[int, str | None]] = []  # (size so far, anchor) per open collection
    written = 0
    added = 0
    for event in yaml.parse(text, Loader=_CBase):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                raise _Budget(
                    event.start_mark,
                    f"values nested more than {MAX_DEPTH} levels deep; rerund reads at most "
                    f"{MAX_DEPTH} levels, flatten the document",
                )
            stack.append((1, event.anchor))
            size = 0  # the collection's own 1 is its first entry on the stack
        elif isinstance(event, yaml.CollectionEndEvent):
            size, anchor = stack.pop()
            if anchor is not None:
                anchors[anchor] = size
            if stack:
                parent, parent_anchor = stack[-1]
                stack[-1] = (parent + size, parent_anchor)
            continue
        elif isinstance(event, yaml.ScalarEvent):
            size = 1
            if event.anchor is not None:
                anchors[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            size = anchors.get(event.anchor or "", 1)  # an unknown anchor is the composer's error
            added += size
            if added > MAX_ALIAS_VALUES:
                raise _Budget(
                    event.start_mark,
                    f"aliases expand the document by more than {MAX_ALIAS_VALUES} values; write the "
                    "values out instead of nesting aliases (*name) of aliases",
                )
        else:
            continue
        written += 1
        if written > MAX_VALUES:
            raise _Budget(
                event.start_mark,
                f"the document has more than {MAX_VALUES} values; rerund reads at most {MAX_VALUES} "
                "values from one file: split it into several files",
            )
        if stack and size:
            stack[-1] = (stack[-1][0] + size, stack[-1][1])


class _Loader(_CBase):  # type: ignore[misc]
    """libyaml's safe loader whose value errors name the node they come from."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError) as exc:
            if isinstance(exc, yaml.YAMLError):
                raise
            what = str(exc).split("\n")[0] or type(exc).__name__
            if isinstance(node, yaml.ScalarNode):
                subject = repr(node.value)
                subject = subject if len(subject) <= 60 else subject[:57] + "..."
                message = f"{subject} cannot be read: {what}; quote it to keep it as text"
            else:
                message = f"this value cannot be read: {what}"
            raise yaml.constructor.ConstructorError(None, None, message, node.start_mark) from None


def _format_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def duplicate_keys(node: yaml.Node, file: str) -> list[PolicyProblem]:
    """Every key written twice in one mapping, located; each node is visited once.

    Iterative, and an aliased node is walked once whatever the number of references, so the
    walk is linear in the size of the text.
    """
    problems: list[PolicyProblem] = []
    seen_nodes: set[int] = set()
    todo: list[tuple[yaml.Node, tuple[str | int, ...]]] = [(node, ())]
    while todo:
        current, loc = todo.pop()
        if id(current) in seen_nodes:
            continue
        seen_nodes.add(id(current))
        if isinstance(current, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in keys:
                        problems.append(
                            _problem(
                                file,
                                key.start_mark,
                                f"duplicate key {key.value!r}; keep one",
                                _format_path((*loc, key.value)),
                            )
                        )
                    keys.add(key.value)
                    todo.append((value, (*loc, key.value)))
        elif isinstance(current, yaml.SequenceNode):
            todo.extend((item, (*loc, i)) for i, item in enumerate(current.value))
    return sorted(problems, key=lambda p: (p.line, p.column))


def decode(raw: bytes, file: str) -> tuple[str | None, list[PolicyProblem]]:
    """UTF-8 text of ``raw`` (a leading BOM dropped), or the located first bad byte."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        return None, [
            PolicyProblem(
                file,
                line,
                column,
                "",
                f"byte 0x{raw[exc.start]:02x} is not valid UTF-8; save the file as UTF-8",
            )
        ]
    return text.removeprefix("\ufeff"), []


def load_text(text: str, file: str) -> tuple[Document | None, list[PolicyProblem]]:
    """Parse one YAML document from ``text`` within the budgets; problems instead of exceptions.

    Never raises for any text: malformed YAML, several documents, tags, duplicate keys, budgets
    and unreadable values are all located problems.
    """
    try:
        _check_budgets(text)
    except _Budget as exc:
        return None, [_problem(file, exc.mark, exc.message)]
    except yaml.YAMLError:
        pass  # the composer below reports the same syntax error, located
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(file, None, None), []
        problems = duplicate_keys(node, file)
        if problems:
            return None, problems
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(x for x in (exc.context, exc.problem) if x) or "malformed YAML"
        if "but found another document" in what:
            what = "expected one YAML document, found several (remove the extra '---')"
        elif "could not determine a constructor" in what:
            what += " (only plain YAML is accepted: no !tags)"
        elif "found unhashable key" in what:
            what += " (write keys as plain text)"
        return None, [_problem(file, mark, f"invalid YAML: {what}")]
    except yaml.YAMLError as exc:
        return None, [_problem(file, None, f"invalid YAML: {exc}")]
    except RecursionError:  # defence in depth: the depth budget keeps every walk shallow
        return None, [
            _problem(file, None, f"values nested too deep; rerund reads at most {MAX_DEPTH} levels")
        ]
    finally:
        loader.dispose()
    return Document(file, node, data), []
