"""User errors: one clear line on stderr and a non-zero exit, never a traceback."""

import argparse
import errno
import functools
import os
import sys


class UserError(Exception):
    """A problem the user can fix (bad params, bad data, no network). The message says how.
    ``exit_code``: the stage's exit status (a subclass for what is not the user's doing sets 1)."""

    exit_code = 2


def first_line(err: BaseException) -> str:
    """An exception's first line of text, or its type's name when it has none (EOFError())."""
    lines = str(err).strip().splitlines()
    return " ".join(lines[0].split()) if lines else type(err).__name__


# A full disk, a read-only or foreign-owned folder: the user's to fix, one line is enough.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def cli(main):
    """Wrap a stage's ``main``: it runs from the project root; a UserError, a write error
    (disk full, no permission) or an interrupt ends in one line on stderr and a non-zero exit,
    after the last good outputs dvc.lock records are put back (``project.restore_outputs``)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        from .project import enter_root, restore_outputs

        try:
            enter_root()
            return main(*args, **kwargs)
        except UserError as err:
            message, code = str(err), err.exit_code
        except KeyboardInterrupt:
            message, code = "interrupted", 130
        except OSError as err:
            if err.errno not in WRITE_ERRNOS:
                restore_outputs()
                raise
            where = f" {err.filename}" if err.filename else ""
            message, code = f"cannot write{where}: {err.strerror or os.strerror(err.errno)}", 2
        except BaseException:
            restore_outputs()     # a bug: its traceback follows, the results stay
            raise
        print(f"error: {message}{restore_outputs()}", file=sys.stderr)
        sys.exit(code)

    return wrapper


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too (argparse's own prints the usage first)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message):
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(2)
