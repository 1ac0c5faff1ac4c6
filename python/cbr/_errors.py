"""The exceptions cbr raises: one class per kind of failure the library tells apart
(src/error.rs, ``ErrorKind``), each also a subclass of the built-in exception a Python caller
would expect, so ``except ValueError`` and ``except FileNotFoundError`` work too. The message is
the one the ``cbr`` command prints after ``error:``."""


class CbrError(Exception):
    """Any failure reported by cbr."""


class BadInput(CbrError, ValueError):
    """The input (file, argument, array) is not what it must be."""


class NotFound(CbrError, FileNotFoundError):
    """A named thing (file, model, class) does not exist."""


class Conflict(CbrError):
    """The request clashes with the current state (e.g. an edit would leave no classes)."""


class TooLarge(CbrError, ValueError):
    """The input is above a size limit (pixels, file size)."""


class Unsupported(CbrError, NotImplementedError):
    """Valid, but something cbr does not do (yet)."""


class Internal(CbrError, RuntimeError):
    """Anything else: a bug, or the machine (disk, runtime library)."""


__all__ = ["CbrError", "BadInput", "NotFound", "Conflict", "TooLarge", "Unsupported", "Internal"]
