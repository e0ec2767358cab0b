"""One exception type for every bad input the kit detects.

Users meet the kit in notebooks and on the command line; a traceback from deep inside torch
tells them nothing. Every public function that takes user input checks it up front and raises
`FinescopeError` with one sentence: what was wrong, which value, and how to fix it. The CLI
prints only that sentence.
Warnings about a situation that repeats call after call go through `warn_once`.
"""

import warnings


class FinescopeError(ValueError):
    """A user-facing error whose message is one complete, actionable sentence."""


_WARNED: set = set()


def warn_once(key, message: str, stacklevel: int = 2) -> bool:
    """Warn with `message` the first time `key` is seen in this process, and stay quiet after.

    A notebook is one process, so a warning about the same situation (e.g. seeds cut to the same
    context length, once per seed draw) appears once per notebook instead of once per call.
    Python's own once-per-location filter does not do this when the message names changing values.
    Returns whether it warned."""
    if key in _WARNED:
        return False
    _WARNED.add(key)
    warnings.warn(message, stacklevel=stacklevel + 1)
    return True
