"""A stage's command line: its error wrapper (one line, non-zero exit, outputs restored) and
an argparse whose usage errors are one line too."""

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

from cnn_internals.core.errors import WRITE_ERRNOS, UserError

P = ParamSpec("P")
R = TypeVar("R")


def cli(main: Callable[P, R]) -> Callable[P, R]:
    """Wrap a stage's ``main``: it runs from the project root; a UserError, a write error
    (disk full, no permission) or an interrupt ends in one line on stderr and a non-zero exit,
    after the last good outputs dvc.lock records are put back (``project.restore_outputs``)."""

    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from cnn_internals.core.project import enter_root, restore_outputs

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

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def stage_parser(doc: str, *, params: bool = True) -> ArgumentParser:
    """The parser of a stage script: its docstring's first paragraph as the description, the
    rest as the epilog (``--help`` shows the whole), and ``--params`` unless ``params`` is False.
    The stage adds its own options (``--dataset``, ``--out``, ...)."""
    from cnn_internals.core.project import user_path

    head, _, rest = doc.partition("\n\n")
    parser = ArgumentParser(description=head, epilog=rest)
    if params:
        parser.add_argument("--params", default=Path("params.yaml"), type=user_path,
                            help="params file (default: params.yaml at the project root)")
    return parser
