"""The packages form layers that only look down (DESIGN.md): core/ at the bottom; capture/,
sensors/ and muxer/ above it; sessions/ on top, with its roles. An import that looks up, found by
walking every module's syntax tree (imports inside functions and TYPE_CHECKING blocks included),
fails here with the file, the line and the rule it breaks."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# package -> the top-level packages it may import from (besides itself and the standard library)
ALLOWED = {
    "core": set(),
    "capture": {"core"},
    "sensors": {"core"},
    "muxer": {"core"},
    "sessions": {"core", "capture", "sensors", "muxer"},
}
PROJECT = set(ALLOWED)

# inside sessions/: role -> roles it may import (sessions.exitcodes is shared by all)
ROLE_ALLOWED = {
    "evidence": set(),
    "archive": {"evidence"},
    "recorder": {"evidence", "archive"},
    "web": {"evidence", "archive", "recorder"},
    "cli": {"evidence", "recorder", "archive", "web"},
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every absolute module name imported by ``path``, with its line (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # `from sessions import recorder` imports the module sessions.recorder
            found += [(node.lineno, f"{name}.{a.name}") for a in node.names]
    return found


def project_modules() -> list[Path]:
    return sorted(p for pkg in PROJECT for p in (ROOT / pkg).rglob("*.py"))


def test_lower_packages_never_import_upper_ones():
    broken = []
    for path in project_modules():
        pkg = path.relative_to(ROOT).parts[0]
        for line, name in imports_of(path):
            top = name.split(".")[0]
            if top in PROJECT and top != pkg and top not in ALLOWED[pkg]:
                broken.append(f"{path.relative_to(ROOT)}:{line} imports {name} ({pkg}/ may import "
                              f"{sorted(ALLOWED[pkg]) or 'nothing of the project'})")
    assert not broken, "imports that look up:\n" + "\n".join(broken)


def test_session_roles_import_only_the_roles_below_them():
    broken = []
    for path in sorted((ROOT / "sessions").rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if len(parts) < 3:
            continue  # sessions/__init__.py, sessions/exitcodes.py: shared by every role
        role = parts[1]
        for line, name in imports_of(path):
            bits = name.split(".")
            if bits[0] != "sessions" or len(bits) < 2 or bits[1] in (role, "exitcodes"):
                continue
            if bits[1] in ROLE_ALLOWED and bits[1] not in ROLE_ALLOWED.get(role, set()):
                broken.append(f"{path.relative_to(ROOT)}:{line} imports {name} (sessions/{role}/ may "
                              f"import {sorted(ROLE_ALLOWED.get(role, set())) or 'no other role'})")
    assert not broken, "imports across roles that look up:\n" + "\n".join(broken)


def test_the_walker_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself can fail: a lower module that imports sessions is reported."""
    fake = ROOT / "muxer" / "_layer_probe.py"
    fake.write_text("def f():\n    from sessions.evidence import manifest\n")
    try:
        names = [n for _, n in imports_of(fake)]
        assert "sessions.evidence" in names
        try:
            test_lower_packages_never_import_upper_ones()
        except AssertionError as exc:
            assert "_layer_probe.py:2" in str(exc)
        else:
            raise AssertionError("an upward import went unnoticed")
    finally:
        fake.unlink()
