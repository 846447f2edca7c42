"""Every error opsloop raises on purpose has one root, and the CLI maps each area to a documented exit code."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from streams.errors import EXIT_CODES, OpsloopError, exit_codes_help

PACKAGES = ("streams", "agents", "classifier")


def project_exceptions() -> list[type[BaseException]]:
    found = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        modules = [package] + [
            importlib.import_module(info.name)
            for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}.")
            if ".migrations" not in info.name and not info.name.endswith("__main__")
        ]
        for module in modules:
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                    found.append(obj)
    return found


def test_every_project_exception_derives_from_opsloop_error():
    classes = project_exceptions()
    assert len(classes) > 25
    strays = sorted(f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, OpsloopError))
    assert strays == []


def test_every_exit_code_is_documented_in_the_help():
    text = exit_codes_help()
    codes = {c.exit_code for c in project_exceptions() if issubclass(c, OpsloopError)}
    assert codes <= set(EXIT_CODES)
    for code in EXIT_CODES:
        assert f"  {code} " in text


@pytest.mark.parametrize(
    "argv, code",
    [
        (["topics", "check", "--file", "/nonexistent/topics.yaml"], 1),
        (["route", "test", "--dir", "/nonexistent-runbooks", "alertname=x"], 1),
    ],
)
def test_the_cli_exits_with_the_errors_code(argv, code, capsys):
    from streams.cli.main import main

    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("opsloop") and "Traceback" not in err
