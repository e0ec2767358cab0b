"""One exception type for every bad input the kit detects.

Users meet the kit in notebooks and on the command line; a traceback from deep inside torch
tells them nothing. Every public function that takes user input checks it up front and raises
`FinescopeError` with one sentence: what was wrong, which value, and how to fix it. The CLI
prints only that sentence.
"""


class FinescopeError(ValueError):
    """A user-facing error whose message is one complete, actionable sentence."""
