"""User errors: one clear line on stderr and a non-zero exit, never a traceback."""

import argparse
import functools
import sys


class UserError(Exception):
    """A problem the user can fix (bad params, bad data, no network). The message says how."""


def first_line(err: BaseException) -> str:
    """An exception's first line of text, or its type's name when it has none (EOFError())."""
    lines = str(err).strip().splitlines()
    return " ".join(lines[0].split()) if lines else type(err).__name__


def cli(main):
    """Wrap a stage's ``main`` so a UserError ends in one line on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too (argparse's own prints the usage first)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message):
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(2)
