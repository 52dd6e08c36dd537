"""core/ is pure: standard library only, and nothing that does I/O, reads a clock or draws
randomness. Checked on the source, so a violation fails before it can be imported anywhere."""

import ast
from pathlib import Path

import paycell.core

CORE = Path(paycell.core.__file__).parent

ALLOWED_MODULES = {
    "collections",
    "collections.abc",
    "dataclasses",
    "decimal",
    "enum",
    "hashlib",
    "hmac",
    "itertools",
    "typing",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_core_modules_import_only_pure_standard_library_and_core() -> None:
    offenders = {}
    for path in sorted(CORE.rglob("*.py")):
        foreign = {
            module
            for module in imported_modules(path)
            if module not in ALLOWED_MODULES and not module.startswith("paycell.core")
        }
        if foreign:
            offenders[path.name] = sorted(foreign)
    assert offenders == {}


def test_purity_check_recognises_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "impure.py"
    module.write_text("import time\nfrom os import path\nfrom paycell.core import limits\n")
    assert imported_modules(module) == {"time", "os", "paycell.core"}
