"""What shapes a result: fingerprints of library code and of configuration values.

The workflow keys every output by what shapes it, so that a change reruns exactly what it affects:

* :func:`code_fingerprint` hashes the source of one ``diffusion_lib`` module and of every
  ``diffusion_lib`` module it imports, transitively (imports inside functions included; the
  package's ``__init__``, which only re-exports, is not). It hashes contents only: neither a
  module's name nor where it lives, and each library import is reduced to the names it binds,
  so moving or renaming a module reruns nothing by itself. Comments, blank lines and docstrings
  are left out, so editing prose reruns nothing while editing a statement (a constant, a line of
  arithmetic) reruns every job whose code reaches it. The hash reads the text of the files, not
  Python's AST dump, so it does not change between Python versions. The modules that only watch
  a job (:data:`OBSERVERS`: heartbeats, TensorBoard and MLflow tracking) are left out with what
  only they import: they write beside a job's outputs, never into them, so improving how a study
  is watched retrains nothing.
* :func:`value_key` hashes a JSON-able value (a configuration block) into a short stable key.
"""
from __future__ import annotations

import ast
import hashlib
import io
import json
import tokenize
from functools import lru_cache
from pathlib import Path
from typing import Any

PACKAGE = "diffusion_lib"
PACKAGE_DIR = Path(__file__).resolve().parent
# modules that watch a job and never shape its outputs (tests/test_tracking.py proves a tracked and
# an untracked study give equal results)
OBSERVERS = frozenset({f"{PACKAGE}.progress", f"{PACKAGE}.tracking", f"{PACKAGE}.mlflow_tracking"})


def value_key(value: Any, length: int = 12) -> str:
    """Short hex key of a JSON-able value; dict key order does not matter, floats keep full precision."""
    text = json.dumps(value, sort_keys=True, default=list, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _module_path(name: str, package_dir: Path = PACKAGE_DIR) -> Path:
    parts = name.split(".")[1:]  # drop the package
    if not parts:
        return package_dir / "__init__.py"
    path = package_dir.joinpath(*parts)
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """Absolute ``diffusion_lib`` module names an ``import from`` statement refers to."""
    if node.level:
        base = importer.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    if not prefix.startswith(PACKAGE):
        return []
    names = [prefix]
    # `from . import tables` / `from .jobs import data`: the imported names may be modules too
    names += [f"{prefix}.{alias.name}" for alias in node.names
              if _module_path(f"{prefix}.{alias.name}", package_dir).exists()]
    return names


def _imports(name: str, package_dir: Path = PACKAGE_DIR) -> set[str]:
    path = _module_path(name, package_dir)
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(PACKAGE + "."))
        elif isinstance(node, ast.ImportFrom):
            found.update(_resolve(name, path.name == "__init__.py", node, package_dir))
    return {m for m in found if m != PACKAGE and _module_path(m, package_dir).exists()}


def module_closure(name: str, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """``name`` and every ``diffusion_lib`` module it imports, transitively, sorted; an observer
    (:data:`OBSERVERS`) and what only it imports are not followed."""
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen or (current in OBSERVERS and current != name):
            continue
        seen.add(current)
        todo.extend(_imports(current, package_dir) - seen)
    return sorted(seen)


def _is_internal(node: ast.AST) -> bool:
    """An ``import`` of a library module (relative, or naming the package)."""
    if isinstance(node, ast.ImportFrom):
        return bool(node.level) or (node.module or "").split(".")[0] == PACKAGE
    return isinstance(node, ast.Import) and any(a.name.split(".")[0] == PACKAGE for a in node.names)


def _canonical_import(node: ast.Import | ast.ImportFrom) -> str:
    """A library import without the place it imports from: which names it binds, nothing of where
    their module lives, so moving or renaming a module leaves the text of its importers unchanged."""
    if isinstance(node, ast.Import):
        names = sorted(f"<library> as {a.asname}" if a.asname else "<library>" for a in node.names)
        return " " * node.col_offset + "import " + ", ".join(names)
    names = sorted(f"{a.name} as {a.asname}" if a.asname else a.name for a in node.names)
    return " " * node.col_offset + "from <library> import " + ", ".join(names)


def normalized_source(path: str | Path) -> str:
    """The code of a Python file without comments, docstrings, blank lines or trailing spaces, and
    with every library import reduced to the names it binds (:func:`_canonical_import`)."""
    text = Path(path).read_text()
    lines = text.splitlines()
    drop: set[int] = set()  # 1-based line numbers of docstrings and library imports
    replace: dict[int, str] = {}  # first line of a library import -> its canonical form
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                drop.update(range(first.lineno, first.end_lineno + 1))
        if isinstance(node, (ast.Import, ast.ImportFrom)) and _is_internal(node):
            drop.update(range(node.lineno, node.end_lineno + 1))
            replace[node.lineno] = _canonical_import(node)
    comments: dict[int, int] = {}  # line -> column where its comment starts
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.start[1]
    kept = []
    for number, line in enumerate(lines, start=1):
        if number in replace:
            kept.append(replace[number])
        if number in drop:
            continue
        line = line[: comments[number]] if number in comments else line
        if line.strip():
            kept.append(line.rstrip())
    return "\n".join(kept) + "\n"


@lru_cache(maxsize=None)
def code_fingerprint(module: str, length: int = 12, package_dir: Path = PACKAGE_DIR) -> str:
    """Hash of the normalized source of ``module`` and of every library module it imports: of their
    contents only (a sorted set of per-module hashes), never of their names or places, so moving a
    module between subpackages or renaming it changes no job's fingerprint by itself."""
    parts = sorted(hashlib.sha256(normalized_source(_module_path(name, package_dir)).encode()).hexdigest()
                   for name in module_closure(module, package_dir))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:length]
