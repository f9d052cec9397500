"""The suite's own rules, checked on its source: no test reads the clock when pytest
imports or collects it, and the suite's folders mirror the code.

A time computed at import (module level, in `parametrize`, a default argument or
a class body) is as old as the collection when the test runs; on a loaded machine
a token's `nbf` two minutes ahead is already valid by then. The clock belongs
inside the test or fixture that uses it. Another rule (no test writes outside
its temporary directory) is enforced at run time by conftest's `_isolated_cwd`.

The layout: four levels, `core/` (router_core alone), `server/`, `cli/` and
`system/` (the only one that runs Redis or Kafka), and the helpers in
`helpers/`; every folder is a package, so each module has one full name.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# Functions that read the clock whatever their arguments.
CLOCKS = frozenset(
    {
        "time.time", "time.time_ns", "time.monotonic", "time.monotonic_ns",
        "time.perf_counter", "time.perf_counter_ns", "time.process_time",
        "time.process_time_ns", "time.thread_time", "time.thread_time_ns",
        "datetime.datetime.now", "datetime.datetime.utcnow", "datetime.datetime.today",
        "datetime.date.today", "anyio.current_time", "trio.current_time",
    }
)  # fmt: skip
# These convert a time they are given, and read the clock only without one.
CLOCKS_WITHOUT_ARGUMENT = {
    "time.localtime": 0, "time.gmtime": 0, "time.ctime": 0, "time.asctime": 0,
    "time.strftime": 1,
}  # fmt: skip
# A class whose construction runs one of these runs their calls.
CONSTRUCTORS = ("__init__", "__new__", "__post_init__", "__attrs_post_init__")


class Module:
    """One source file: its import aliases, and the calls each top-level function
    (or class construction) makes, by qualified name."""

    def __init__(self, name: str, source: str, path: str) -> None:
        self.name = name
        self.path = path
        self.tree = ast.parse(source, filename=path)
        self.aliases: dict[str, str] = {}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    local = alias.asname or alias.name.split(".")[0]
                    self.aliases[local] = alias.name if alias.asname else local
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        self.defined = {
            node.name
            for node in self.tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }
        self.callees: dict[str, set[str]] = {}
        for node in self.tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.callees[f"{name}.{node.name}"] = self._calls_in([node])
            elif isinstance(node, ast.ClassDef):
                constructors = [
                    item
                    for item in node.body
                    if isinstance(item, ast.FunctionDef) and item.name in CONSTRUCTORS
                ]
                self.callees[f"{name}.{node.name}"] = self._calls_in(constructors)

    def qualified(self, expr: ast.expr) -> str | None:
        if isinstance(expr, ast.Name):
            if expr.id in self.aliases:
                return self.aliases[expr.id]
            return f"{self.name}.{expr.id}" if expr.id in self.defined else expr.id
        if isinstance(expr, ast.Attribute):
            base = self.qualified(expr.value)
            return None if base is None else f"{base}.{expr.attr}"
        return None

    def _calls_in(self, nodes: Sequence[ast.AST]) -> set[str]:
        found: set[str] = set()
        for root in nodes:
            for node in ast.walk(root):
                if isinstance(node, ast.Call) and (name := self.qualified(node.func)):
                    found.add(name)
        return found

    def import_time_calls(self) -> Iterator[ast.Call]:
        """Every call that runs when the module is imported or its tests collected."""
        for node in self.tree.body:
            if _is_main_guard(node):
                continue
            yield from _evaluated(node)


def _is_main_guard(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def _evaluated(node: ast.AST) -> Iterator[ast.Call]:
    """Calls in `node` that run when `node` itself runs: not those in the bodies
    of the functions and lambdas it defines, but those in their decorators and
    default arguments, and all of a class body."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        now: list[ast.expr] = [*node.args.defaults, *filter(None, node.args.kw_defaults)]
        if not isinstance(node, ast.Lambda):
            now += node.decorator_list
        for expr in now:
            yield from _evaluated(expr)
        return
    if isinstance(node, ast.Call):
        yield node
    for child in ast.iter_child_nodes(node):
        yield from _evaluated(child)


def clock_readers(modules: list[Module]) -> set[str]:
    """The qualified names of functions (and classes) that read the clock when
    called, directly or through other functions of these modules."""
    callees = {name: calls for module in modules for name, calls in module.callees.items()}
    readers: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, calls in callees.items():
            if name not in readers and any(c in CLOCKS or c in readers for c in calls):
                readers.add(name)
                changed = True
    return readers


def _reads_clock(name: str, call: ast.Call, readers: set[str]) -> bool:
    if name in CLOCKS or name in readers:
        return True
    needs = CLOCKS_WITHOUT_ARGUMENT.get(name)
    return needs is not None and len(call.args) <= needs and not call.keywords


def violations(modules: list[Module]) -> list[str]:
    readers = clock_readers(modules)
    found = []
    for module in modules:
        for call in module.import_time_calls():
            name = module.qualified(call.func)
            if name and _reads_clock(name, call, readers):
                found.append(
                    f"{module.path}:{call.lineno}: {name}() runs at import/collection; "
                    "read the clock inside the test or fixture instead"
                )
    return found


def module_name(path: Path) -> str:
    """The name the module is imported by: `tests.helpers.support`, `tests.core`."""
    parts = (TESTS.name, *path.relative_to(TESTS).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def suite_modules() -> list[Module]:
    modules = []
    for path in sorted(TESTS.rglob("*.py")):
        source = path.read_text()
        modules.append(Module(module_name(path), source, str(path.relative_to(TESTS.parent))))
    return modules


def test_no_test_module_reads_the_clock_at_import_or_collection() -> None:
    assert violations(suite_modules()) == []


def _snippet(source: str, name: str = "test_snippet") -> Module:
    return Module(name, textwrap.dedent(source), f"{name}.py")


def test_the_guard_finds_clock_reads_wherever_collection_evaluates_them() -> None:
    helper = _snippet(
        """
        import time as clock
        def stamp(): return int(clock.time())
        def later(): return stamp() + 5
        class Stamped:
            def __init__(self): self.at = clock.monotonic()
        """,
        "helpers",
    )
    snippet = _snippet(
        """
        import time, datetime as dt, pytest
        from time import perf_counter as pc
        from datetime import datetime
        from helpers import later, Stamped
        STARTED = time.time()
        NOW = {"at": datetime.now()}
        AS_MODULE = dt.datetime.utcnow()
        @pytest.mark.parametrize("nbf", [later()])
        def test_a(nbf, default=pc()): ...
        class TestB:
            made = Stamped()
            def test_b(self, t=time.strftime("%H")): ...
        LABEL = time.ctime()
        """
    )
    found = violations([helper, snippet])
    lines = sorted(int(v.split(":")[1]) for v in found)
    assert lines == [6, 7, 8, 9, 10, 12, 13, 14], found


def test_the_guard_leaves_clock_reads_that_run_inside_tests_alone() -> None:
    snippet = _snippet(
        """
        import time
        import pytest
        def helper(): return time.time()
        @pytest.fixture
        def now(): return time.monotonic()
        def test_a(make=lambda: time.time()):
            def inner(): return helper()
            assert time.localtime(0).tm_year == 1970 and inner()
        STAMP = time.gmtime(0)
        LATER = lambda: helper()
        class TestB:
            def test_b(self): assert time.time()
        if __name__ == "__main__":
            print(time.time())
        """
    )
    assert violations([snippet]) == []


LEVELS = ("core", "server", "cli", "system")
HELPERS = "helpers"
# The only modules beside the levels: the root conftest and this file.
ROOT_MODULES = {"tests", "tests.conftest", "tests.test_suite_hygiene"}
# Packages a level may not import, directly or through the helpers it imports.
FORBIDDEN = {
    "core": ("router_server", "router_cli"),
    # Real Redis and Kafka run only in system tests.
    "server": ("tests.helpers.redis_server", "tests.helpers.kafka_broker"),
    "cli": ("tests.helpers.redis_server", "tests.helpers.kafka_broker"),
}


def imported(module: Module) -> set[str]:
    """The modules `module` imports, by full name."""
    names: set[str] = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def layout_problems(modules: list[Module]) -> list[str]:
    by_name = {module.name: module for module in modules}

    def reach(name: str, seen: set[str]) -> set[str]:
        """What `name` imports, and what the suite's own modules it imports import."""
        if name in seen or name not in by_name:
            return set()
        seen.add(name)
        found = imported(by_name[name])
        for other in list(found):
            found |= reach(other, seen)
        return found

    problems = []
    for module in modules:
        if module.name in ROOT_MODULES:
            continue
        level = module.name.split(".")[1]
        if level not in (*LEVELS, HELPERS):
            problems.append(f"{module.path}: not under one of {', '.join(LEVELS)} or {HELPERS}/")
        for banned in FORBIDDEN.get(level, ()):
            for name in sorted(reach(module.name, set())):
                if name == banned or name.startswith(banned + "."):
                    problems.append(f"{module.path}: a {level} test reaches {name}")
                    break
    return problems


def test_the_suite_mirrors_the_code() -> None:
    assert layout_problems(suite_modules()) == []


def test_every_folder_of_the_suite_is_a_package() -> None:
    folders = {path.parent for path in TESTS.rglob("*.py")}
    assert sorted(str(f) for f in folders if not (f / "__init__.py").exists()) == []
    assert sorted(p.name for p in TESTS.iterdir() if p.is_dir() and p.name != "__pycache__") == (
        sorted([*LEVELS, HELPERS])
    )


def test_the_layout_guard_follows_imports_through_the_helpers() -> None:
    helper = _snippet("from router_server.app import create_app", "tests.helpers.apps")
    core = _snippet("from tests.helpers.apps import create_app", "tests.core.test_x")
    server = _snippet("from tests.helpers.redis_server import RedisServer", "tests.server.a.t")
    cli = _snippet("import router_server", "tests.cli.test_ok")
    stray = _snippet("import router_core", "tests.limits.test_y")
    found = layout_problems([helper, core, server, cli, stray])
    assert [problem.split(":")[0] for problem in found] == [
        "tests.core.test_x.py", "tests.server.a.t.py", "tests.limits.test_y.py",
    ], found  # fmt: skip
