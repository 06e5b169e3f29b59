"""The import arrows point one way: components import the core, orchestration imports training, and only the
command line imports everything (every import statement counts, also those inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {  # package -> the first-party packages it may import
    "batcomputer": {"batcomputer"},
    "api": {"api", "batcomputer"},
    "worker": {"worker", "batcomputer"},
    "training": {"training", "batcomputer"},
    "orchestration": {"orchestration", "training", "batcomputer"},
    "cli": {"cli", "batcomputer", "api", "worker", "training", "orchestration"},
}


def imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(ALLOWED)


def test_imports_point_one_way() -> None:
    wrong = {}
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            extra = imported(path) - allowed
            if extra:
                wrong[str(path.relative_to(ROOT))] = sorted(extra)
    assert wrong == {}
