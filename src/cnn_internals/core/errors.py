"""User errors: one clear line on stderr and a non-zero exit, never a traceback."""

import errno


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
