"""What shapes a result: fingerprints of library code and of configuration values.

The workflow keys every output by what shapes it, so that a change reruns exactly what it affects:

* :func:`code_fingerprint` hashes the source of one ``diffusion_lib`` module and of every
  ``diffusion_lib`` module it imports, transitively (imports inside functions included; the
  package's ``__init__``, which only re-exports, is not). It hashes what the code says, never
  where it stands: the set of names imported from outside the library and the multiset of
  top-level statements (each function, class or assignment), with every library import left out.
  Moving a module, renaming it or splitting it in two reruns nothing by itself. Comments, blank
  lines and docstrings are left out, so editing prose reruns nothing while editing a statement
  (a constant, a line of arithmetic) reruns every job whose code reaches it. The hash reads the
  text of the files, not Python's AST dump, so it does not change between Python versions. The
  modules that only watch a job (:data:`OBSERVERS`: heartbeats, TensorBoard and MLflow tracking)
  are left out with what only they import: they write beside a job's outputs, never into them,
  so improving how a study is watched retrains nothing. So is this module, which keys outputs.
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
PACKAGE_DIR = Path(__file__).resolve().parents[1]
# modules that watch a job and never shape its outputs (tests/watch/test_tracking.py proves a tracked and
# an untracked study give equal results)
OBSERVERS = frozenset(f"{PACKAGE}.{name}" for name in ("train.progress", "watch.job_tracking", "watch.tensorboard",
                                                     "watch.mlflow_client", "watch.mlflow_runs"))


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
    """``name`` and every ``diffusion_lib`` module it imports, transitively, sorted. Not followed: an
    observer (:data:`OBSERVERS`), this module (it keys outputs and never shapes them, so editing it,
    for instance to name an observer's new place, reruns nothing) and what only they import."""
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen or ((current in OBSERVERS or current == __name__) and current != name):
            continue
        seen.add(current)
        todo.extend(_imports(current, package_dir) - seen)
    return sorted(seen)


def _is_internal(node: ast.AST) -> bool:
    """An ``import`` of a library module (relative, or naming the package)."""
    if isinstance(node, ast.ImportFrom):
        return bool(node.level) or (node.module or "").split(".")[0] == PACKAGE
    return isinstance(node, ast.Import) and any(a.name.split(".")[0] == PACKAGE for a in node.names)


def _external_import(node: ast.Import | ast.ImportFrom) -> list[str]:
    """One line per name that a non-library import binds, in one spelling whatever the statement
    groups, so that two modules importing the same name contribute the same line."""
    if isinstance(node, ast.Import):
        return [f"import {a.name}" + (f" as {a.asname}" if a.asname else "") for a in node.names]
    return [f"from {node.module} import {a.name}" + (f" as {a.asname}" if a.asname else "") for a in node.names]


def code_statements(path: str | Path) -> tuple[frozenset[str], list[str]]:
    """What a Python file computes, in two parts: the set of names it imports from outside the
    library (one line each, :func:`_external_import`) and the text of each of its other top-level
    statements (a function or class with its decorators, an assignment, ...) without comments,
    docstrings, blank lines, trailing spaces or library imports.

    Neither part says which file a definition stands in, or which library module a name comes
    from, so splitting a module, moving a definition to another module or a module to another
    subpackage changes neither the union of these parts over a job's modules nor its hash."""
    text = Path(path).read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    drop: set[int] = set()  # 1-based line numbers of docstrings and library imports
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                drop.update(range(first.lineno, first.end_lineno + 1))
        if isinstance(node, (ast.Import, ast.ImportFrom)) and _is_internal(node):
            drop.update(range(node.lineno, node.end_lineno + 1))
    comments: dict[int, int] = {}  # line -> column where its comment starts
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.start[1]
    imports: set[str] = set()
    statements: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if not _is_internal(node):
                imports.update(_external_import(node))
            continue
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        kept = []
        for number in range(first, node.end_lineno + 1):
            if number in drop:
                continue
            line = lines[number - 1]
            line = line[: comments[number]] if number in comments else line
            if line.strip():
                kept.append(line.rstrip())
        if kept:
            statements.append("\n".join(kept))
    return frozenset(imports), statements


def normalized_source(path: str | Path) -> str:
    """The code of a Python file as the fingerprint reads it: its sorted outside imports, then its
    top-level statements in order (:func:`code_statements`)."""
    imports, statements = code_statements(path)
    return "".join(line + "\n" for line in sorted(imports) + statements)


@lru_cache(maxsize=None)
def code_fingerprint(module: str, length: int = 12, package_dir: Path = PACKAGE_DIR) -> str:
    """Hash of the code ``module`` and every library module it imports run: the set of their outside
    imports and the multiset of their top-level statements (:func:`code_statements`), each sorted.
    Which file holds a statement, and what any file is called, do not enter it: moving a module,
    renaming it, or splitting it into two changes no job's fingerprint by itself."""
    imports: set[str] = set()
    statements: list[str] = []
    for name in module_closure(module, package_dir):
        found, texts = code_statements(_module_path(name, package_dir))
        imports |= found
        statements += texts
    parts = sorted(imports) + sorted(hashlib.sha256(text.encode()).hexdigest() for text in statements)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:length]
