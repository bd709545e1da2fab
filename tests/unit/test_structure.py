"""The layout's rules, checked on the source: wiring apart from logic, the library apart from its tooling."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shared.runtime.settings import REPO_ROOT, SERVICE_NAMES

SHARED = REPO_ROOT / "shared"
SERVICES = REPO_ROOT / "services"
LIBRARY = ("events", "bus", "runtime", "ml")
MAX_WIRING_FUNCTION_LINES = 40


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _library_files() -> list[Path]:
    files = [SHARED / "events.py"]
    for package in LIBRARY[1:]:
        files.extend(sorted((SHARED / package).rglob("*.py")))
    return files


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_app_py_is_wiring_only(service: str) -> None:
    app = SERVICES / service / "app.py"
    long_functions = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(_tree(app))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_WIRING_FUNCTION_LINES
    ]
    assert not long_functions, f"{app}: functions longer than {MAX_WIRING_FUNCTION_LINES} lines"


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_no_service_keeps_a_catch_all_handlers_module(service: str) -> None:
    assert not (SERVICES / service / "handlers.py").exists(), "name logic modules for what they hold"


def test_shared_keeps_at_most_six_plain_modules_at_its_top_level() -> None:
    plain = sorted(p.name for p in SHARED.glob("*.py") if p.name != "__init__.py")
    assert len(plain) <= 6, plain


def test_the_library_never_imports_the_tooling() -> None:
    offenders = {
        str(path.relative_to(REPO_ROOT)): sorted(
            m for m in _imported_modules(path) if m.startswith("shared.ops")
        )
        for path in _library_files()
    }
    assert not {path: mods for path, mods in offenders.items() if mods}


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_a_service_imports_no_other_service(service: str) -> None:
    others = tuple(f"services.{name}" for name in SERVICE_NAMES if name != service)
    offenders = {
        str(path.relative_to(REPO_ROOT)): sorted(m for m in _imported_modules(path) if m.startswith(others))
        for path in (SERVICES / service).rglob("*.py")
    }
    assert not {path: mods for path, mods in offenders.items() if mods}


def test_nothing_but_shared_events_declares_an_event_payload() -> None:
    declared = []
    for path in [*SHARED.rglob("*.py"), *SERVICES.rglob("*.py")]:
        if path == SHARED / "events.py":
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(base, ast.Name) and base.id == "Payload" for base in node.bases
            ):
                declared.append(f"{path.relative_to(REPO_ROOT)}:{node.name}")
    assert not declared
