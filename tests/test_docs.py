"""The docs name only what exists (issue 32.5): every module, file and path they mention is in the
tree, the architecture page places every library module, and the README stays two pages."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "diffusion_lib"
DOCS = [ROOT / "README.md", ROOT / "config/README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = ("tests", "scripts", "tools", "workflow", "config", "profiles", "envs", "docs")


def missing_references(text: str, root: Path = ROOT) -> set[str]:
    """What ``text`` names that ``root`` lacks: ``diffusion_lib/<path>``, ``diffusion_lib.<module>``
    (its subpackages down to a module; what follows a module is one of its names) and repository
    files under :data:`TOP` with a known suffix."""
    lib = root / "diffusion_lib"
    missing = set()
    for m in re.finditer(r"diffusion_lib/([A-Za-z0-9_/.]*[A-Za-z0-9_])", text):
        path = lib / m.group(1)
        if not (path.exists() or path.with_suffix(".py").exists()):
            missing.add(m.group(0))
    for m in re.finditer(r"diffusion_lib((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text):
        place = lib
        for part in m.group(1).split(".")[1:]:
            if place.with_suffix(".py").exists() and place != lib:
                break  # a module: the rest are its names
            place = place / part
            if not (place.is_dir() or place.with_suffix(".py").exists()):
                missing.add(m.group(0))
                break
    pattern = rf"(?<![\w/.])((?:{'|'.join(TOP)})/[A-Za-z0-9_./-]+\.(?:py|yaml|smk|sh|md|txt|pt))"
    for m in re.finditer(pattern, text):
        if not (root / m.group(1)).exists():
            missing.add(m.group(1))
    return missing


def test_the_checker_finds_a_deleted_module_and_a_missing_file():
    text = ("`diffusion_lib/pack.py`, `diffusion_lib.pack`, `diffusion_lib.train.pack`, `tests/test_nothing.py`; "
            "fine: `diffusion_lib/train/engine.py`, `diffusion_lib.watch.status`, `diffusion_lib.train.engine.Engine`, "
            "`diffusion_lib/settings/config.schema.yaml`, `tests/test_docs.py`, `tools/bench.py`")
    assert missing_references(text) == {"diffusion_lib/pack.py", "diffusion_lib.pack", "diffusion_lib.train.pack",
                                        "tests/test_nothing.py"}


def test_every_doc_names_only_modules_and_files_that_exist():
    found = {str(doc.relative_to(ROOT)): sorted(missing_references(doc.read_text())) for doc in DOCS}
    assert {doc: refs for doc, refs in found.items() if refs} == {}


def test_the_architecture_page_places_every_library_module_and_only_those():
    text = (ROOT / "docs/architecture.md").read_text()
    named = set(re.findall(r"`((?!tools/)(?:[a-z_]+/)?[a-z_]+)\.py`", text))
    modules = {str(p.relative_to(LIB).with_suffix("")) for p in LIB.rglob("*.py") if p.name != "__init__.py"}
    assert modules - named == set(), "modules the architecture page does not place"
    assert named - modules - {"__init__"} == set(), "names on the architecture page that are not modules"


def test_the_readme_is_two_pages_with_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 160
    assert text.count("```bash") == 2 and "<!-- test-command:" in text
