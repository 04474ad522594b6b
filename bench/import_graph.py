"""How the package's modules import each other: imports inside functions, and the largest
circle of modules that import each other (a strongly connected component).

    python bench/import_graph.py [--package khadem_nb]

Imports under ``if TYPE_CHECKING:`` are left out (they never run), and so is the import of a
module's own parent package that ``from .. import x`` makes (Python runs it first anyway). An
import inside a function is counted whether it names a module of the package or another (a
third-party import deferred for start-up time is one too), and listed by the module it sits in.
The circle (networkx's strongly connected components) is measured over every import that runs,
module level and inside functions alike.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from pathlib import Path

import networkx


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolved(node: ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The absolute names an ``import from`` brings in: the module and each imported name as
    a possible submodule."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


def imports_of(tree: ast.Module, module: str, is_package: bool) -> tuple[list[str], list[str]]:
    """Every module name the code of ``tree`` imports when it runs, and the first name of each
    import statement that sits inside a function."""
    names: list[str] = []
    inside: list[str] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child, in_function)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found = [alias.name for alias in node.names] if isinstance(node, ast.Import) \
                else resolved(node, module, is_package)
            names.extend(found)
            if in_function:
                inside.append(found[0])
            return
        nested = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, nested)

    visit(tree, False)
    return names, inside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="khadem_nb")
    args = parser.parse_args()
    root = Path(args.package).resolve()
    files = sorted(root.rglob("*.py"))
    modules = {module_name(path, root): path for path in files}
    graph: dict[str, set[str]] = {}
    inside: Counter[str] = Counter()
    internal = 0
    for name, path in modules.items():
        found, deferred = imports_of(ast.parse(path.read_text()), name, path.name == "__init__.py")
        internal += sum(target.startswith(args.package) for target in deferred)
        ancestors = {name.rsplit(".", n)[0] for n in range(1, name.count(".") + 1)}
        graph[name] = {target for target in found if target in modules and target != name
                       and target not in ancestors}  # a parent package runs first anyway
        inside[name] = len(deferred)
    largest = sorted(max(networkx.strongly_connected_components(networkx.DiGraph(graph)), key=len))
    print(f"modules: {len(modules)}")
    print(f"imports inside functions: {sum(inside.values())}, {internal} of the package's own modules")
    for name, count in inside.most_common():
        if count:
            print(f"  {count:3d}  {name}")
    members = f": {', '.join(largest)}" if len(largest) > 1 else ""
    print(f"largest circle: {len(largest)} module(s){members}")


if __name__ == "__main__":
    sys.exit(main())
