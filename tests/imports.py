"""The project's own source files a stage script imports, directly or not (parsed, not run)."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "cnn_internals"
SRC = REPO / "src"


def _module_file(name: str) -> Path | None:
    """src/ file of module ``name`` (a dotted name under cnn_internals), or None."""
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts if path.name == "__init__.py" else parts[:-1])


def _imported_modules(path: Path) -> set:
    """Dotted names of cnn_internals modules ``path`` imports anywhere in its body."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_src = SRC in path.parents
    package = _package_of(path) if in_src else ""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != PACKAGE:
                continue
            names.add(module)
            # `from . import mnist` / `from .models import lenet5`: the names may be modules
            names.update(f"{module}.{alias.name}" for alias in node.names
                         if _module_file(f"{module}.{alias.name}") is not None)
    return names


def stage_sources(script: Path) -> set:
    """Repository-relative paths of the stage script, the stages/ helpers it imports, and
    every cnn_internals file it imports, with the packages' __init__.py on the way."""
    files, todo = {script}, [script]
    helper = script.parent / "_bootstrap.py"
    if helper.is_file() and "import _bootstrap" in script.read_text(encoding="utf-8"):
        files.add(helper)
    while todo:
        for name in _imported_modules(todo.pop()):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):       # importing a.b.c runs a and a.b first
                found = _module_file(".".join(parts[:i]))
                if found is not None and found not in files:
                    files.add(found)
                    todo.append(found)
    return {p.relative_to(REPO).as_posix() for p in files}
