"""Stand-ins for a run killed in the middle of a stage, shared by the resume tests."""


class Interrupt(Exception):
    """Raised where a real run would have been killed."""


class Calls:
    """Wraps `real`, counting calls; with `fail_on`, that call raises `Interrupt` instead of running."""

    def __init__(self, real, fail_on: int | None = None):
        self.real, self.fail_on, self.count = real, fail_on, 0

    def __call__(self, *args, **kwargs):
        self.count += 1
        if self.count == self.fail_on:
            raise Interrupt
        return self.real(*args, **kwargs)
