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


FILE_SUFFIXES = {"py", "csv", "json", "pt", "md", "log", "yaml", "html", "benchmark", "png", "tsv", "txt", "ckpt",
                 "smk", "sh", "tex", "pdf", "svg"}


def _modules() -> dict[str, list[Path]]:
    """Each library module's short name (``data``, ``closed_form``) and subpackage name, to its files."""
    names: dict[str, list[Path]] = {}
    for p in LIB.rglob("*.py"):
        if p.name != "__init__.py":
            names.setdefault(p.stem, []).append(p)
    for d in LIB.iterdir():
        if d.is_dir() and (d / "__init__.py").exists():
            names.setdefault(d.name, []).append(d)
    return names


def _config_keys() -> set[str]:
    """``section.key`` of every config field the schema declares (``data.seed``, ``train.steps``)."""
    import yaml

    schema = yaml.safe_load((LIB / "settings/config.schema.yaml").read_text())
    return {f"{section}.{key}" for section, spec in schema.get("properties", {}).items()
            for key in (spec.get("properties") or {})}


def missing_dotted_names(text: str) -> set[str]:
    """Code-formatted dotted names (`` `data.make_heldout` ``, `` `plan.config_checks` ``) whose first
    part is a library module or subpackage, and whose next part that module does not define (or that
    subpackage does not hold); file names (`` `curve.csv` ``) and config keys (`` `data.seed` ``) are
    not code."""
    modules, keys, missing = _modules(), _config_keys(), set()
    for m in re.finditer(r"`([a-z_][a-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)[^`]*`", text):
        head, name = m.group(1), m.group(2)
        places = modules.get(head)
        if not places or name in FILE_SUFFIXES or f"{head}.{name}" in keys:
            continue
        found = False
        for place in places:
            if place.is_dir():
                found |= (place / f"{name}.py").exists() or (place / name).is_dir()
            else:
                found |= re.search(rf"^\s*(?:def|class|async def) {name}\b|^\s*{name}\s*[:=]|^{name}\b",
                                   place.read_text(), re.M) is not None
        if not found:
            missing.add(f"{head}.{name}")
    return missing


def test_code_formatted_names_in_the_docs_exist():
    """Issue 43: `config._semantic_problems` stayed in docs/method.md after the function was gone."""
    assert missing_dotted_names("`config._semantic_problems` and `data.nothing_here`, fine: `data.make_heldout`, "
                                "`plan.config_checks`, `statistics.classify`") == {"config._semantic_problems",
                                                                                     "data.nothing_here"}
    found = {str(doc.relative_to(ROOT)): sorted(missing_dotted_names(doc.read_text())) for doc in DOCS}
    assert {doc: refs for doc, refs in found.items() if refs} == {}


def _tracked() -> list[Path]:
    """The repository's files: those git tracks (build outputs and results are not the repository)."""
    import subprocess

    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode == 0 and out.stdout.strip():
        return [ROOT / line for line in out.stdout.splitlines() if (ROOT / line).is_file()]
    return [p for p in ROOT.rglob("*") if p.is_file() and not any(
        part.startswith(".") or part in ("results",) or part.endswith(".egg-info") for part in p.relative_to(ROOT).parts)]


OUTSIDE = re.compile(r"\.\./shared|shared/SPEC|SPEC\.md|/work/")


def test_the_repository_names_no_path_outside_it():
    """The repository stands on its own (issue 43): no doc, config, rule or module names a file outside
    it; the method it implements is docs/method.md, whose sections §1-§9 the code cites."""
    suffixes = {".py", ".md", ".smk", ".yaml", ".rst", ".toml", ".sh", ".txt", ""}
    files = [p for p in _tracked() if p.suffix in suffixes and p.name != "test_docs.py" and p.stat().st_size < 1_000_000]
    named = {str(p.relative_to(ROOT)): OUTSIDE.findall(p.read_text(errors="ignore")) for p in files}
    assert {f: hits for f, hits in named.items() if hits} == {}
    sections = set(re.findall(r"^## §(\d)", (ROOT / "docs/method.md").read_text(), re.M))
    assert sections == {str(i) for i in range(1, 10)}
    cited = {m for p in files for m in re.findall(r"method §(\d)", p.read_text(errors="ignore"))}
    assert cited and cited <= sections
