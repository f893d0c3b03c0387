"""The shape rules of the code base, checked on its source: small files, short parameter lists, typed values
across task and flow boundaries, a library free of Prefect and MLflow, and the pipeline's config named only where
it is read whole (the library's models take their own configs, the tasks the parts they need)."""

from __future__ import annotations

import ast
import inspect
import re
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Its definition, the flows (the CLI is one of them) and the tests.
ALLOWED = ("lookalike_models/config.py", "flows/", "tests/")
PACKAGES = ("lookalike_models", "tasks", "flows")
MAX_LINES = 400
MAX_PARAMS = 8


def python_sources() -> list[Path]:
    skip = {".venv", ".git", "build", "node_modules"}
    return [p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts)]


def test_the_nightly_config_is_named_only_by_the_flows_the_cli_and_its_definition():
    naming = re.compile(r"\bNightlyConfig\b")
    offenders = [
        str(path.relative_to(ROOT))
        for path in python_sources()
        if not str(path.relative_to(ROOT)).startswith(ALLOWED) and naming.search(path.read_text())
    ]
    assert not offenders, f"NightlyConfig named outside the entry points: {offenders}"
    assert naming.search((ROOT / "flows" / "nightly_refresh.py").read_text())  # the scan does see the flows


def sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    return len([n for n in names if n not in ("self", "cls")]) + bool(args.vararg) + bool(args.kwarg)


def test_no_library_file_over_the_line_limit():
    long = {
        str(p.relative_to(ROOT)): n for p in sources(*PACKAGES) if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_no_function_over_the_parameter_limit():
    wide = [
        f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({parameter_count(node)})"
        for p in sources(*PACKAGES)
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and parameter_count(node) > MAX_PARAMS
    ]
    assert not wide, f"functions over {MAX_PARAMS} parameters: {wide}"


def test_the_library_imports_neither_prefect_nor_mlflow():
    offenders = [
        str(p.relative_to(ROOT))
        for p in sources("lookalike_models")
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and any(
            name.split(".")[0] in ("prefect", "mlflow")
            for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])
        )
    ]
    assert not offenders


def boundary_functions() -> dict[str, typing.Callable]:
    """Every task and flow of tasks/ and flows/: what crosses their boundary is cached, logged and shown."""
    import importlib

    from prefect import Flow, Task

    found = {}
    for path in sources("tasks", "flows"):
        module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for name, value in vars(module).items():
            if isinstance(value, (Task, Flow)) and value.fn.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = value.fn
    return found


def bare_dicts(annotation) -> bool:
    """``dict`` with no key and value types, or ``dict[str, Any]``: structure no reader can see."""
    if annotation is dict:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict:
        return args[1] is typing.Any or bare_dicts(args[1])
    return any(bare_dicts(a) for a in args)


def test_no_bare_dict_crosses_a_task_or_flow_boundary():
    functions = boundary_functions()
    loose = []
    for name, fn in functions.items():
        hints = typing.get_type_hints(fn)
        loose += [f"{name}: {key}" for key, hint in hints.items() if bare_dicts(hint)]
        missing = set(inspect.signature(fn).parameters) - set(hints)
        loose += [f"{name}: {key} (no annotation)" for key in missing]
    assert not loose, f"task parameters or returns typed as a bare dict: {loose}"
    assert len(functions) >= 20 and "flows.nightly_refresh.nightly_refresh" in functions  # the walk sees them


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_of_the_package_imports(package):
    import importlib

    for path in sources(package):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        importlib.import_module(module.removesuffix(".__init__"))
