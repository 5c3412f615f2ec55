"""One exception type for every user-facing failure.

A ``FactoryError`` carries one sentence that says what is wrong and, where it can,
what to do. The CLI prints it and exits with code 2; nothing else is caught.
"""


class FactoryError(Exception):
    """A bad input or an impossible request, explained in one sentence."""


class StorageError(FactoryError):
    """A write or read the storage refused (no space, permission, a file in the way, a network error):
    fixed outside factory, after which the same command succeeds; never a property of the inputs."""
