"""Rules of style the linters do not check: every public function and method of the package
says the types it takes and returns (issue 19, step 6)."""

import ast

from imports import SRC

PACKAGE = SRC / "cnn_internals"
# Public: a name not starting with "_", plus the two dunders callers use by their own syntax.
PUBLIC_DUNDERS = ("__init__", "__call__")


def missing_hints(source: str, where: str) -> list:
    """One line per public function or method of ``source`` (of a public class, at any depth)
    with an argument other than self/cls or a return type not annotated (``__init__`` returns
    None and may leave it unsaid). Functions nested in functions are private helpers: not checked."""
    missing = []

    def visit(node: ast.AST, owner: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                if not child.name.startswith("_"):
                    visit(child, f"{owner}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if child.name.startswith("_") and child.name not in PUBLIC_DUNDERS:
                    continue
                a = child.args
                args = [arg for arg in a.posonlyargs + a.args + a.kwonlyargs if arg.arg not in ("self", "cls")]
                args += [arg for arg in (a.vararg, a.kwarg) if arg is not None]
                bare = [arg.arg for arg in args if arg.annotation is None]
                no_return = child.returns is None and child.name != "__init__"
                if bare or no_return:
                    what = ([f"arguments {', '.join(bare)}"] if bare else []) + (["return type"] if no_return else [])
                    missing.append(f"{where}:{child.lineno} {owner}{child.name}: no {' or '.join(what)}")

    visit(ast.parse(source), "")
    return missing


def test_every_public_function_of_the_package_is_annotated():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 40, f"found only {len(files)} files under {PACKAGE}"
    missing = [line for path in files
               for line in missing_hints(path.read_text(encoding="utf-8"), path.relative_to(SRC.parent).as_posix())]
    assert not missing, f"{len(missing)} public functions lack type hints:\n" + "\n".join(missing)


def test_the_check_finds_what_is_missing_and_passes_what_is_not():
    source = '''
def plain(x, y: int): ...
def no_return(x: int): ...
def fine(x: int, *args: str, **kwargs: float) -> None: ...
def _private(x): ...
def varargs(*args, **kwargs) -> None: ...
class Public:
    def __init__(self, a): ...
    def __call__(self) -> int: ...
    def __repr__(self): ...
    @classmethod
    def make(cls, b: int): ...
    class Inner:
        def method(self, c) -> None: ...
class _Private:
    def method(self, d): ...
def outer() -> None:
    def inner(e): ...
'''
    found = [line.split(" ", 1)[1] for line in missing_hints(source, "x.py")]
    assert found == ["plain: no arguments x or return type", "no_return: no return type",
                     "varargs: no arguments args, kwargs", "Public.__init__: no arguments a",
                     "Public.make: no return type", "Public.Inner.method: no arguments c"]
