"""The import arrows point one way: components import the core, orchestration imports training, and only the
command line imports everything (every import statement counts, also those inside functions)."""

from __future__ import annotations

import ast
import re
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


JOBQUEUE = ROOT / "batcomputer" / "jobqueue"


def first_party_outside_jobqueue() -> list[Path]:
    return [path for package in ALLOWED for path in sorted((ROOT / package).rglob("*.py"))
            if JOBQUEUE not in path.parents]


def test_nothing_outside_the_job_protocol_touches_its_redis_client_or_private_names() -> None:
    """The job store's Redis client and the package's private functions are the package's own; others use its
    methods. (A component may hold a Redis client it created itself, as the gateway and workers do.)"""
    wrong = []
    for path in first_party_outside_jobqueue():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
                owner = node.value.attr
                if owner in ("jobs", "batches", "store") and (node.attr == "redis" or node.attr.startswith("_")):
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} .{owner}.{node.attr}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("batcomputer.jobqueue"):
                wrong += [f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name}"
                          for alias in node.names if alias.name.startswith("_")]
    assert wrong == []


def test_every_lua_script_is_a_file_loaded_by_the_one_loader() -> None:
    """Lua runs only through ``batcomputer.jobqueue.lua``: no inline scripts, no other way of running them."""
    from batcomputer.jobqueue.lua import FOLDER, sources

    runners = ("register_script", "evalsha", "script_load", ".eval(")
    elsewhere = [str(path.relative_to(ROOT)) for package in ALLOWED for path in sorted((ROOT / package).rglob("*.py"))
                 if path != JOBQUEUE / "lua.py" and any(word in path.read_text() for word in runners)]
    assert elsewhere == []
    names = sources()
    assert set(names) == {path.stem for path in FOLDER.glob("*.lua")}
    assert [name for name, text in names.items() if re.search(r"\$[a-z]", text)] == []  # shared names filled in
    for name, text in names.items():  # each script says at its top what it takes
        header = "".join(line for line in text.splitlines() if line.startswith("--"))
        assert "KEYS" in header and "ARGV" in header, name
