"""The package's layers, read from every module's imports (top level and inside functions alike).

- `host/` (the machine's capabilities) imports nothing above it: not the checks, the engine, the
  service, the views, the authoring side or the CLI.
- The platform's values (sriov_node/platform.py) import only the model, the errors and the stdlib;
  the pure checks take them from there, not from `host/`.
- Production code never imports the simulator: only `sim/` itself and the CLI (which opens the root).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Tuple

PACKAGE = Path(__file__).resolve().parent.parent / "sriov_node"
ABOVE_HOST = ("checks", "engine", "service", "views", "authoring", "cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> List[Tuple[int, str]]:
    """(line, module) of every import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names]  # from sriov_node import sim
    return found


def modules() -> Dict[str, Path]:
    return {str(p.relative_to(PACKAGE)): p for p in sorted(PACKAGE.rglob("*.py"))}


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_walk_sees_imports_inside_functions():
    seen = {name for _, name in imports_of(PACKAGE / "cli" / "check.py")}
    assert "sriov_node.views.check_report" in seen and "sriov_node.checks.fix" in seen  # both imported inside functions


def test_host_imports_nothing_above_it():
    wrong = [f"{rel}:{line} imports {name}" for rel, path in modules().items() if rel.startswith("host/")
             for line, name in imports_of(path)
             if any(within(name, f"sriov_node.{up}") for up in ABOVE_HOST)]
    assert wrong == []


def test_the_platform_values_import_only_the_model_and_the_errors():
    wrong = [f"platform.py:{line} imports {name}" for line, name in imports_of(PACKAGE / "platform.py")
             if within(name, "sriov_node") and not any(within(name, f"sriov_node.{m}") for m in ("model", "errors"))]
    assert wrong == []


def test_the_pure_checks_take_the_platform_values_from_below():
    """diagnose, fix, bootcfg, kargs judge values: no host, no engine (views/check_report.py is the one that observes).

    The driver table (drivers.py, a pure table over model) is theirs too: check and preflight name the same drivers."""
    pure = ("checks/diagnose.py", "checks/fix.py", "checks/bootcfg.py", "checks/kargs.py")
    allowed = ("sriov_node.platform", "sriov_node.checks", "sriov_node.model", "sriov_node.errors", "sriov_node.drivers")
    wrong = [f"{rel}:{line} imports {name}" for rel in pure for line, name in imports_of(PACKAGE / rel)
             if within(name, "sriov_node") and name != "sriov_node" and not any(within(name, m) for m in allowed)]
    assert wrong == []


def test_production_code_never_imports_the_simulator():
    wrong = [f"{rel}:{line} imports {name}" for rel, path in modules().items()
             if not rel.startswith(("sim/", "cli/"))
             for line, name in imports_of(path) if within(name, "sriov_node.sim")]
    assert wrong == []


# Every part of the package and the parts it may import: the house docs/design.md draws. A part is a
# sub-package (`engine`) or a top-level module (`config`); its own modules may import each other.
FOUNDATION = ("__init__", "errors", "model", "files", "platform", "locks", "atomic", "config", "drivers")
MAY_IMPORT = {
    **{m: FOUNDATION for m in FOUNDATION},
    "host": FOUNDATION,
    "checks": FOUNDATION,
    "engine": FOUNDATION + ("host", "checks"),
    "generations": FOUNDATION + ("host", "engine"),
    "authoring": FOUNDATION + ("host", "engine", "generations"),
    "views": FOUNDATION + ("host", "checks", "engine", "generations"),
    "service": FOUNDATION + ("host", "engine", "generations", "views"),
    "sim": FOUNDATION + ("host",),
    "cli": FOUNDATION + ("host", "checks", "engine", "generations", "authoring", "views", "service", "sim"),
}


def part_of(name: str) -> str:
    """The part a module (`sriov_node.engine.plan`, or `sriov_node.__version__` imported by name) is in."""
    rest = name.split(".")[1:]
    if not rest:
        return "__init__"
    return rest[0] if (PACKAGE / rest[0]).is_dir() or (PACKAGE / f"{rest[0]}.py").exists() else "__init__"


def test_every_part_imports_only_the_parts_below_it():
    parts = {part_of("sriov_node." + rel[:-3].replace("/", ".")) for rel in modules() if rel != "__main__.py"}
    assert parts - {"__init__"} <= set(MAY_IMPORT), f"a part the layer table does not know: {parts - set(MAY_IMPORT)}"
    wrong = []
    for rel, path in modules().items():
        if rel == "__main__.py":
            continue
        mine = part_of("sriov_node." + rel[:-3].replace("/", "."))
        for line, name in imports_of(path):
            if not within(name, "sriov_node") or name == "sriov_node":
                continue
            theirs = part_of(name)
            if theirs != mine and theirs not in MAY_IMPORT[mine]:
                wrong.append(f"{rel}:{line} imports {name} ({mine} may import {', '.join(MAY_IMPORT[mine])})")
    assert wrong == []


def test_the_design_document_draws_the_same_house():
    """docs/design.md's layer table names every part with what it may import, as MAY_IMPORT says."""
    text = (PACKAGE.parent / "docs" / "design.md").read_text()
    for part, allowed in MAY_IMPORT.items():
        if part in FOUNDATION:
            continue
        row = next((line for line in text.splitlines() if line.startswith(f"| `{part}")), None)
        assert row is not None, f"docs/design.md has no layer row for {part}"
        cell = row.split("|")[3]
        named = {p for p in MAY_IMPORT if f"`{p}" in cell} | ({"foundation"} if "foundation" in cell else set())
        assert named - {"foundation"} == set(allowed) - set(FOUNDATION), (part, cell)
