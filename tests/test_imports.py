"""The package's import graph: no cycles inside edgekd/, and lower layers never import a stage or
the CLI. Every import statement counts, also those inside functions (a cycle hidden in a function
is still a cycle), except under `if TYPE_CHECKING:`."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "edgekd"
STAGES = ("search", "distill", "prune", "export", "bench", "report")
# Layers below the stages: they serve every stage and must not depend on one.
LOWER_LAYERS = ("backends", "data", "latency", "models", "quantizers", "remote", "teacher", "config", "errors", "io",
                "measure", "target", "training", "version", "interrupt")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(name: str) -> str | None:
    """The module `name` refers to: 'edgekd.a.b.c' may name a module or a symbol in one."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in MODULES:
            return ".".join(parts[:end])
    return None


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            if not prefix.startswith("edgekd"):
                continue
            # `from edgekd.a import b`: module edgekd.a.b when there is one, else the names of edgekd.a
            targets = [resolve(f"{prefix}.{alias.name}") if f"{prefix}.{alias.name}" in MODULES else resolve(prefix)
                       for alias in node.names]
            found.update(t for t in targets if t and t != module)
            continue
        else:
            continue
        for name in names:
            if name.startswith("edgekd"):
                target = resolve(name)
                if target and target != module:
                    found.add(target)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), except a package's
    __init__ importing its own submodule."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    return [c for c in found
            if not (len(c) == 2 and (c[1].startswith(c[0] + ".") or c[0].startswith(c[1] + ".")))]


def test_no_import_cycles():
    assert cycles() == []


def test_lower_layers_never_import_a_stage_or_the_cli():
    upper = {f"edgekd.{word}" for word in (*STAGES, "cli", "commands", "pipeline", "api")}
    offenders = []
    for module, targets in GRAPH.items():
        layer = module.split(".")[1] if "." in module else ""
        if layer not in LOWER_LAYERS:
            continue
        for target in targets:
            if any(target == u or target.startswith(u + ".") for u in upper):
                offenders.append(f"{module} -> {target}")
    assert offenders == []


def test_stages_do_not_import_each_other():
    """A stage never imports another stage's `stage` module (stages talk through edgekd/results.py),
    and never anything of a later stage. A later stage may reuse an earlier stage's algorithm, as
    pruning's recovery reuses distillation's KD loss, teacher-output cache and INT8 training."""
    offenders = []
    for module, targets in GRAPH.items():
        parts = module.split(".")
        if len(parts) < 2 or parts[1] not in STAGES:
            continue
        for target in targets:
            other = target.split(".")[1] if "." in target else ""
            if other in STAGES and other != parts[1]:
                later = STAGES.index(other) > STAGES.index(parts[1])
                if later or target == f"edgekd.{other}.stage":
                    offenders.append(f"{module} -> {target}")
    assert offenders == []


def test_the_checker_sees_a_cycle(tmp_path, monkeypatch):
    # The checker itself: a two-module cycle inside a function body is found.
    monkeypatch.setitem(GRAPH, "edgekd.fake_a", {"edgekd.fake_b"})
    monkeypatch.setitem(GRAPH, "edgekd.fake_b", {"edgekd.fake_a"})
    assert ["edgekd.fake_a", "edgekd.fake_b"] in cycles()
