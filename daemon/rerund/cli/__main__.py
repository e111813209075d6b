"""``python -m rerund.cli``: the same as the ``rerund`` command."""

from rerund.cli import console

console()
