"""What shapes a result: fingerprints of library code and of configuration values.

The workflow keys every output by what shapes it, so that a change reruns exactly what it affects:

* :func:`code_fingerprint` hashes the source of one ``diffusion_lib`` module and of every
  ``diffusion_lib`` module it imports, transitively (imports inside functions included; the
  package's ``__init__``, which only re-exports, is not). Comments, blank lines and docstrings
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


def _module_path(name: str) -> Path:
    parts = name.split(".")[1:]  # drop the package
    if not parts:
        return PACKAGE_DIR / "__init__.py"
    path = PACKAGE_DIR.joinpath(*parts)
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
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
    names += [f"{prefix}.{alias.name}" for alias in node.names if _module_path(f"{prefix}.{alias.name}").exists()]
    return names


def _imports(name: str) -> set[str]:
    path = _module_path(name)
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(PACKAGE + "."))
        elif isinstance(node, ast.ImportFrom):
            found.update(_resolve(name, path.name == "__init__.py", node))
    return {m for m in found if m != PACKAGE and _module_path(m).exists()}


def module_closure(name: str) -> list[str]:
    """``name`` and every ``diffusion_lib`` module it imports, transitively, sorted; an observer
    (:data:`OBSERVERS`) and what only it imports are not followed."""
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen or (current in OBSERVERS and current != name):
            continue
        seen.add(current)
        todo.extend(_imports(current) - seen)
    return sorted(seen)


def normalized_source(path: str | Path) -> str:
    """The code of a Python file without comments, docstrings, blank lines or trailing spaces."""
    text = Path(path).read_text()
    lines = text.splitlines()
    drop: set[int] = set()  # 1-based line numbers of docstrings
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                drop.update(range(first.lineno, first.end_lineno + 1))
    comments: dict[int, int] = {}  # line -> column where its comment starts
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.start[1]
    kept = []
    for number, line in enumerate(lines, start=1):
        if number in drop:
            continue
        line = line[: comments[number]] if number in comments else line
        if line.strip():
            kept.append(line.rstrip())
    return "\n".join(kept) + "\n"


@lru_cache(maxsize=None)
def code_fingerprint(module: str, length: int = 12) -> str:
    """Hash of the normalized source of ``module`` and every library module it imports."""
    digest = hashlib.sha256()
    for name in module_closure(module):
        digest.update(name.encode() + b"\0" + normalized_source(_module_path(name)).encode() + b"\0")
    return digest.hexdigest()[:length]
