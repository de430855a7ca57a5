"""The `examrec` command line: one module per command (``register(sub)`` adds its sub-parser),
the JSON-or-text output helpers and progress. Imports from every other role; nothing imports
from here except the console script, ``python -m sessions.cli`` and the tests."""
from sessions.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
