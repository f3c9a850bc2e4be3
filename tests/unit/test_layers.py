"""Data flows one way: a stage imports only from earlier stages (STYLE: layers contract)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "trafficguard"

# Earlier stages first. A module in stage i may import trafficguard.<stage j> only for j <= i.
# errors/config/clock/gc_tuning are shared foundations; pipeline/daemon/cli (and the
# pipeline's tail: tail, record_process, sensor_loss) wire everything.
ORDER = [
    "capture",
    "decode",
    "flow",
    "fast",
    "voip",
    "analyzers",
    "detect",
    "privacy",
    "escalation",
    "sinks",
]
FOUNDATION = {"errors", "config", "clock", "gc_tuning", "__init__"}
WIRING = {
    "pipeline", "daemon", "cli", "wiring", "__main__", "tail", "record_process", "sensor_loss",
}  # fmt: skip


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("trafficguard")
        ):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("trafficguard"))
    return names


def _stage_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_stages_import_only_earlier_stages() -> None:
    violations = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if own in WIRING or own in FOUNDATION:
            continue
        assert own in ORDER, f"{rel}: stage {own!r} is not in the layer order"
        for mod in _imports(path):
            other = _stage_of(mod)
            if other in FOUNDATION:
                continue
            if other in WIRING or ORDER.index(other) > ORDER.index(own):
                violations.append(f"{rel} imports {mod}")
    assert violations == []


def test_foundation_imports_no_stage() -> None:
    for name in ("errors.py", "config.py"):
        stages = {_stage_of(m) for m in _imports(PKG / name)} - FOUNDATION
        assert stages == set(), f"{name} imports {stages}"
