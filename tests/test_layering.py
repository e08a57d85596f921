"""The house rules, read from the syntax tree (docstrings and comments may talk about anything):

* quant/ and runtime/ never print, never touch sys.stdout/stderr/stdin, never import click or a
  higher floor (quant/ imports neither runtime/ nor ggufkit/; runtime/ does not import ggufkit/);
* library errors do not name CLI flags;
* no import cycle between any two modules of quant/, runtime/ and ggufkit/, function-level
  imports included;
* no dead code in quant/ and runtime/: every import is used, and every top-level name is referenced
  somewhere in the repository's Python (tests and tools included), or listed in the module's
  ``__all__``, or in a ``# public: name, name`` comment line of the module (API kept on purpose).
  Imports in a package's ``__init__.py`` are re-exports and count as used; an import marked
  ``# noqa: F401`` is kept for its side effect."""
from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

from tests.helpers import REPO

LIBRARY = ("quant", "runtime", "ggufkit")
EVERYWHERE = LIBRARY + ("tests", "tools")


def _sources(*pkgs):
    for pkg in pkgs:
        yield from sorted(p for p in (REPO / pkg).rglob("*.py") if "__pycache__" not in p.parts)


@lru_cache(maxsize=None)
def _tree(p: Path) -> ast.Module:
    return ast.parse(p.read_text(encoding="utf-8"), str(p))


def _module_name(p: Path) -> str:
    parts = list(p.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_library_errors_do_not_name_cli_flags():
    bad = []
    for p in _sources("quant", "runtime"):
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"raise \w+Error\(.*['\"(\s]--[a-z]", line):
                bad.append(f"{p.relative_to(REPO)}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_runtime_and_quant_do_not_print_or_import_upward():
    """No print(), sys.stdout/stderr/stdin, click, or import of a higher layer in quant/ and runtime/."""
    bad = []
    for p in _sources("quant", "runtime"):
        rel = p.relative_to(REPO)
        upward = ("ggufkit", "click") + (("runtime",) if str(rel).startswith("quant") else ())
        for node in ast.walk(_tree(p)):
            what = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                what = "print()"
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "sys"
                  and node.attr in ("stdout", "stderr", "stdin")):
                what = f"sys.{node.attr}"
            elif isinstance(node, ast.Import) and any(a.name.split(".")[0] in upward for a in node.names):
                what = "import " + ", ".join(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in upward and not node.level:
                what = f"from {node.module} import"
            if what:
                bad.append(f"{rel}:{node.lineno}: {what}")
    assert not bad, "\n".join(bad)


# ---------------------------------------------------------------- import cycles

def import_graph() -> dict[str, set[str]]:
    """module -> the library modules it imports anywhere in its body. ``from a.b import c`` is an
    edge to a.b.c when that is a module, else to a.b; a package's __init__ is not implied."""
    files = {_module_name(p): p for p in _sources(*LIBRARY)}
    graph = {}
    for mod, p in files.items():
        pkg = mod if p.name == "__init__.py" else mod.rpartition(".")[0]
        edges = set()
        for node in ast.walk(_tree(p)):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for a in node.names:
                    edges.add(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base)
        graph[mod] = {e for e in edges if e in files and e != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_cycle_finder_sees_a_function_level_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules():
    found = cycles(import_graph())
    assert not found, "import cycles (function-level imports included):\n" + "\n".join(" <-> ".join(c) for c in found)


# ---------------------------------------------------------------- dead code

@lru_cache(maxsize=None)
def referenced_names() -> frozenset[str]:
    """Every identifier the repository's Python uses: names read, attributes, names imported, and
    strings that look like identifiers (getattr, __all__, registries keyed by name)."""
    used = set()
    for p in _sources(*EVERYWHERE):
        if p == Path(__file__).resolve():     # this file's probes name what must stay unreferenced
            continue
        for node in ast.walk(_tree(p)):
            if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Store):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.ImportFrom):
                used.update(a.name for a in node.names)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                used.update(re.findall(r"[A-Za-z_]\w*", node.value) if len(node.value) < 200 else ())
    return frozenset(used)


def _public(text: str, tree: ast.Module) -> set[str]:
    names = set()
    for line in text.splitlines():
        m = re.match(r"\s*# public:(.*)", line)
        if m:
            names.update(re.findall(r"\w+", m.group(1)))
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
                and isinstance(node.value, (ast.List, ast.Tuple))):
            names.update(e.value for e in node.value.elts if isinstance(e, ast.Constant))
    return names


def _registers(node) -> bool:
    """Decorated by a registration (Numba's @overload(f): the name itself is never called)."""
    return any(isinstance(d, ast.Call) and isinstance(d.func, (ast.Name, ast.Attribute))
               and (d.func.id if isinstance(d.func, ast.Name) else d.func.attr).startswith(("overload", "register"))
               for d in node.decorator_list)


def _top_level_names(tree: ast.Module):
    """Top-level functions, classes and single-name constants (a tuple of names is an enumeration,
    whose unused members are fine)."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not _registers(node):
            yield node.name, node.lineno
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    yield t.id, node.lineno
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            yield node.target.id, node.lineno


def unused_imports(rel: str, text: str, tree: ast.Module) -> list[str]:
    if rel.endswith("__init__.py"):
        return []
    lines = text.splitlines()
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    read |= {n.value.id for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
    read |= _public(text, tree)
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            continue
        if "noqa: F401" in lines[node.lineno - 1] or "noqa: F401" in lines[getattr(node, "end_lineno", node.lineno) - 1]:
            continue
        for a in node.names:
            bound = a.asname or a.name.split(".")[0]
            if bound not in read:
                bad.append(f"{rel}:{node.lineno}: unused import {a.name}")
    return bad


def unreferenced_names(rel: str, text: str, tree: ast.Module) -> list[str]:
    used, public = referenced_names(), _public(text, tree)
    return [f"{rel}:{line}: {name} is never referenced"
            for name, line in _top_level_names(tree)
            if not (name.startswith("__") and name.endswith("__")) and name not in used and name not in public]


def test_dead_code_finder_sees_unused_import_and_name():
    text = ("import os\nimport sys\nfrom a import b  # noqa: F401\n"
            "def zz_never_called_anywhere(): return sys.argv\n# public: zz_kept\ndef zz_kept(): pass\n")
    tree = ast.parse(text)
    assert [b.split(": ", 1)[1] for b in unused_imports("probe.py", text, tree)] == ["unused import os"]
    assert [b.split(": ", 1)[1] for b in unreferenced_names("probe.py", text, tree)] == \
        ["zz_never_called_anywhere is never referenced"]


def test_no_unused_imports_or_unreferenced_names_in_quant_and_runtime():
    bad = []
    for p in _sources("quant", "runtime"):
        rel, text, tree = str(p.relative_to(REPO)), p.read_text(encoding="utf-8"), _tree(p)
        bad += unused_imports(rel, text, tree) + unreferenced_names(rel, text, tree)
    assert not bad, f"{len(bad)} dead names:\n" + "\n".join(bad)
