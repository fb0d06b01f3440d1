"""The package's shape, read from its source with `ast`: no import cycle among zephyr_utils modules, no
core module importing the toy plug-in (zephyr_utils.toy) other than through the registry, our own
modules imported at module level only. Each check also runs on small fake packages, which show that it
catches what it looks for. Then the registry: plug-ins load on the first lookup, and a plug-in other
than the toy world reaches the core through the same names."""

import ast
import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from zephyr_utils import registry
from zephyr_utils.data import load_sft_data
from zephyr_utils.judges import make_judge

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "zephyr_utils"
TOY = "zephyr_utils.toy"
REGISTRY = "zephyr_utils.registry"  # the one module that imports by name (its PLUGINS)


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (the package itself when a name is imported from its __init__)
    line: int
    top_level: bool  # run when the module is imported (not inside a function)

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Module name -> file, for every .py file of `package` (a folder under `root`)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _absolute(module: str, is_package: bool, name: str | None, level: int) -> str:
    """The absolute module of `from <level dots><name> import ...` written in `module`."""
    if level == 0:
        return name or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([name] if name else []))


def _nodes(tree: ast.AST):
    """(node, top_level) for every node; top_level is False inside a function or lambda."""
    stack = [(tree, True)]
    while stack:
        node, top = stack.pop()
        yield node, top
        inside = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        stack.extend((child, inside) for child in ast.iter_child_nodes(node))


def package_imports(root: Path, package: str) -> list[Import]:
    """Every import of one of the package's modules by another, wherever it is written."""
    modules = module_files(root, package)

    def owner(name: str) -> str | None:  # the longest module prefix: `import a.b.c` runs a.b.c
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    found = []
    for source, path in modules.items():
        for node, top in _nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(source, path.name == "__init__.py", node.module, node.level)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            else:
                continue
            found += [Import(source, owner(t), node.lineno, top) for t in targets if owner(t)]
    return found


def import_cycles(imports: list[Import]) -> list[list[str]]:
    """The groups of modules that import each other in a circle (strongly connected components of the
    import graph with more than one module, or one that imports itself), each sorted."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.source, set()).add(imp.target)
        graph.setdefault(imp.target, set())
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1 or v in graph[v]:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(groups)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def direct_toy_imports(imports: list[Import], toy: str = TOY) -> list[Import]:
    """Imports of the toy package (or one of its modules) by a module outside it."""
    return [i for i in imports if _within(i.target, toy) and not _within(i.source, toy)]


def imports_by_name(root: Path, package: str) -> list[str]:
    """Modules that call importlib.import_module or __import__ (imports an `ast` reading cannot see)."""
    found = []
    for module, path in module_files(root, package).items():
        for node, _ in _nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
                if name in ("import_module", "__import__"):
                    found.append(f"{module}:{node.lineno}")
    return found


def write_package(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


# ------------------------------------------------------------------------------ the package itself

IMPORTS = package_imports(ROOT, PACKAGE)


def test_the_import_graph_is_read():
    """Not vacuous: the graph holds known edges of the core and of the toy package, written both ways
    (`from .x import y` and `from .. import x`)."""
    edges = {(i.source, i.target) for i in IMPORTS}
    assert {("zephyr_utils.aif", "zephyr_utils.judges"), ("zephyr_utils.toy.judge", "zephyr_utils.judges"),
            ("zephyr_utils.toy", "zephyr_utils.registry"), ("zephyr_utils.toy", "zephyr_utils.toy.world")} <= edges


def test_no_import_cycles():
    cycles = import_cycles(IMPORTS)
    edges = [str(i) for group in cycles for i in IMPORTS if i.source in group and i.target in group]
    assert not cycles, f"modules importing each other in a circle: {cycles}\n" + "\n".join(edges)


def test_no_core_module_imports_the_toy_package():
    found = direct_toy_imports(IMPORTS)
    assert not found, ("core modules reach the toy world only by name, through `registry.lookup`:\n"
                       + "\n".join(map(str, found)))


def test_own_modules_are_imported_at_module_level():
    inside = [str(i) for i in IMPORTS if not i.top_level]
    assert not inside, "imports of our own modules inside functions hide the dependency graph:\n" + "\n".join(inside)


def test_only_the_registry_imports_modules_by_name():
    assert [m.partition(":")[0] for m in imports_by_name(ROOT, PACKAGE)] == [REGISTRY]


# ------------------------------------------------------------------------- the checks on fake packages

def test_cycle_check_finds_a_cycle_through_a_function_level_import(tmp_path):
    files = {
        "fake/__init__.py": "",
        "fake/a.py": "from .b import f\n",
        "fake/b.py": "import json\n\ndef f():\n    from .c import g\n",
        "fake/c.py": "from fake import a\n\ndef g():\n    pass\n",
        "fake/d.py": "from . import a\n",  # imports the cycle but is not part of it
        "fake/sub/__init__.py": "from .. import d\n",
    }
    write_package(tmp_path, files)
    assert import_cycles(package_imports(tmp_path, "fake")) == [["fake.a", "fake.b", "fake.c"]]
    write_package(tmp_path, {"fake/c.py": "def g():\n    pass\n"})
    assert import_cycles(package_imports(tmp_path, "fake")) == []
    write_package(tmp_path, {"fake/sub/leaf.py": "from . import helper\n", "fake/sub/__init__.py": "from .leaf import x\nhelper = 1\n"})
    assert import_cycles(package_imports(tmp_path, "fake")) == [["fake.sub", "fake.sub.leaf"]]  # via the package's __init__


def test_toy_check_finds_a_core_module_importing_the_toy_package(tmp_path):
    write_package(tmp_path, {
        "fake/__init__.py": "",
        "fake/core.py": "import json\nfrom .toy.world import World\n",
        "fake/other.py": "def f():\n    import fake.toy\n",
        "fake/clean.py": "from . import registry\n",
        "fake/registry.py": "import importlib\nPLUGINS = ('fake.toy',)\n",
        "fake/toy/__init__.py": "from .. import registry\nfrom .world import World\n",
        "fake/toy/world.py": "from ..clean import registry\nWorld = object\n",
    })
    imports = package_imports(tmp_path, "fake")
    found = {(i.source, i.target) for i in direct_toy_imports(imports, "fake.toy")}
    assert found == {("fake.core", "fake.toy.world"), ("fake.other", "fake.toy")}
    assert [str(i) for i in imports if not i.top_level] == ["fake.other:2 imports fake.toy"]


def test_by_name_check_finds_importlib_calls(tmp_path):
    write_package(tmp_path, {
        "fake/__init__.py": "",
        "fake/a.py": "import importlib\n\ndef load():\n    return importlib.import_module('fake.toy')\n",
        "fake/b.py": "def load():\n    return __import__('fake.toy')\n",
        "fake/c.py": "from importlib import resources\n",
    })
    assert sorted(imports_by_name(tmp_path, "fake")) == ["fake.a:4", "fake.b:2"]


# ------------------------------------------------------------------------------------- the registry

def test_core_modules_load_the_toy_plugin_only_on_a_lookup():
    """The CLI and every stage import without the toy package (nor transformers, TRL or datasets: the CLI
    starts fast); the first lookup imports it, and its names are registered."""
    code = textwrap.dedent("""
        import json, sys
        import zephyr_utils.ablations, zephyr_utils.cli, zephyr_utils.plotting
        before = sorted(m for m in sys.modules if m.startswith("zephyr_utils.toy") or m in ("transformers", "trl", "datasets"))
        from zephyr_utils import registry
        print(json.dumps([before, {kind: registry.names(kind) for kind in registry.KINDS}, "zephyr_utils.toy" in sys.modules]))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    before, names, loaded = json.loads(done.stdout.splitlines()[-1])
    assert before == [] and loaded
    assert names == {"dataset": ["toyworld"], "prompts": ["toyworld"], "eval_prompts": ["toyworld"], "judge": ["toy"],
                     "sampler": ["teacher"], "base_model": ["tiny"]}


@pytest.fixture
def fresh_registry(monkeypatch):
    """The registry as it is after loading the plug-ins, restored after the test."""
    registry.names("judge")
    monkeypatch.setattr(registry, "_factories", {kind: dict(f) for kind, f in registry._factories.items()})
    return registry


def test_lookup_names_what_is_registered(fresh_registry):
    with pytest.raises(ValueError, match=r"no judge named 'gpt4' is registered; registered: toy"):
        registry.lookup("judge", "gpt4")
    with pytest.raises(ValueError, match="unknown plug-in kind 'model'"):
        registry.names("model")
    with pytest.raises(ValueError, match=r"judge 'toy' is already registered \(by zephyr_utils\.toy\.judge\)"):
        registry.register("judge", "toy", lambda world_seed=0: None)
    registry.register("judge", "toy", registry.lookup("judge", "toy"))  # the same factory again: fine


def test_another_plugin_plugs_in_through_the_same_names(fresh_registry, monkeypatch, tmp_path):
    """A plug-in package other than the toy world: its dataset loads through `load_sft_data` and its
    judge through `make_judge`, by the names a recipe would give them, with no change to the core."""
    data = tmp_path / "other-world"
    write_package(tmp_path, {"other_world/__init__.py": f"""
        from zephyr_utils import registry
        from zephyr_utils.data import write_jsonl
        from zephyr_utils.toy.judge import ToyJudge

        def write(world_seed=0):
            chat = [{{"role": "user", "content": "Hi"}}, {{"role": "assistant", "content": "Hello, world " + str(world_seed)}}]
            write_jsonl([{{"prompt": "Hi", "prompt_id": "0", "messages": chat}}], {str(data)!r} + "/sft/train.jsonl")
            return {str(data)!r}

        class StrictJudge(ToyJudge):
            name = "strict"

        registry.register("dataset", "other_world", write)
        registry.register("judge", "strict", StrictJudge)
    """})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "PLUGINS", (*registry.PLUGINS, "other_world"))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    try:
        rows = load_sft_data("other_world", "train", world_seed=3)
        assert [r["messages"][-1]["content"] for r in rows] == ["Hello, world 3"]
        assert make_judge("strict", world_seed=1).name == "strict" and registry.names("judge") == ("strict", "toy")
    finally:
        sys.modules.pop("other_world", None)
