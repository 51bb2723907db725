"""The package's shape (docs/architecture.md): imports point one way, no cycles, no hidden imports, small files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "smooth_infomax"

# layer of every top-level module or sub-package (docs/architecture.md); a module may import from its own layer
# or from a lower number only
LAYERS = {
    "errors": 1, "config": 1, "config_files": 1, "checkpoint": 1, "audio": 1, "mel": 1, "runtime": 1,
    "progress": 1, "stages": 1,
    "data": 2, "model": 2,
    "runs": 3, "features": 3, "sources": 3, "hub": 3, "modelcard": 3, "upstream": 3,
    "training": 4, "probe": 4, "decoding": 4, "analysis": 4, "abx": 4, "encode": 4,
    "pipeline": 5, "report": 5, "compare": 5, "reproduce": 5,
    "compare_report": 5,
    "cli": 6, "__init__": 6, "__main__": 6,
}
# imports that may stay inside functions: optional extras, and the lazy hooks of the package entry points
OPTIONAL = {"transformers", "huggingface_hub", "tensorboard", "torch.utils.tensorboard", "espeakng_loader",
            "fastabx", "praatio", "importlib"}
LAZY_FILES = {"__init__.py", "cli.py"}  # the entry points import lazily on purpose (fast `--help`, light import)
MAX_LINES = 520


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    return ".".join(rel.parts)


def _resolve(path: Path, node: ast.ImportFrom) -> str | None:
    """The smooth_infomax-relative dotted name an import refers to, or None for other packages."""
    if node.level == 0:
        mod = node.module or ""
        return mod[len("smooth_infomax."):] if mod.startswith("smooth_infomax.") else None
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    base = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *(node.module.split(".") if node.module else [])])


def _imports(path: Path) -> list[tuple[str, ast.AST]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(path, node)
            if target is not None:
                if target == "" or target in (_name(path).rsplit(".", 1)[0],):
                    out.extend((f"{target}.{a.name}".strip("."), node) for a in node.names)
                else:
                    out.append((target, node))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("smooth_infomax."):
                    out.append((alias.name[len("smooth_infomax."):], node))
    return out


def _top(name: str) -> str:
    return name.split(".")[0]


def test_every_module_has_a_layer():
    missing = sorted({_top(_name(p)) for p in _modules()} - set(LAYERS))
    assert not missing, f"add these to LAYERS and docs/architecture.md: {missing}"


def test_imports_point_one_way():
    wrong = []
    for path in _modules():
        own = _top(_name(path))
        for target, node in _imports(path):
            top = _top(target)
            if top in LAYERS and top != own and LAYERS[top] > LAYERS[own]:
                wrong.append(f"{path.relative_to(PKG)}:{node.lineno} imports {target} (layer {LAYERS[top]} > "
                             f"{LAYERS[own]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_modules():
    graph: dict[str, set[str]] = {}
    names = {_name(p) for p in _modules()}
    for path in _modules():
        src = _name(path)
        for target, _ in _imports(path):
            while target and target not in names and f"{target}.__init__" not in names:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target:
                dst = target if target in names else f"{target}.__init__"
                if dst != src:
                    graph.setdefault(src, set()).add(dst)
    # package __init__ files re-export their children: an edge child -> parent.__init__ is not a real cycle
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if m.endswith("__init__") and n.startswith(m[: -len("__init__")]):
                continue
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_no_hidden_imports_inside_functions():
    hidden = []
    for path in _modules():
        if path.name in LAZY_FILES and path.parent == PKG:
            continue
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    mods = [node.module or ""]
                elif isinstance(node, ast.ImportFrom):
                    mods = ["." * node.level + (node.module or "")]
                else:
                    continue
                for mod in mods:
                    if not any(mod == o or mod.startswith(o + ".") for o in OPTIONAL):
                        hidden.append(f"{path.relative_to(PKG)}:{node.lineno} imports {mod} inside {fn.name}()")
    assert not hidden, "\n".join(hidden)


def test_no_file_over_the_size_limit():
    big = [f"{p.relative_to(PKG)}: {n} lines" for p in _modules()
           if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not big, "\n".join(big)
