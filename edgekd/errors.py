"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input: the message says what is wrong and how to fix it."""


class MissingDependencyError(UserError):
    """An optional backend is not installed; the message names the pip extra."""

    def __init__(self, package: str, extra: str):
        super().__init__(
            f"{package} is not installed; install it with: pip install 'edgekd[{extra}]'"
        )
        self.package = package
        self.extra = extra


class OtherRankFailed(Exception):
    """Under torchrun: rank 0 failed with something other than bad input, so this rank stops too
    (the CLI prints it as one line and exits with code 1)."""
