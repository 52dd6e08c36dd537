"""The examples in the library's docstrings run, and print what they show."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module_name", ["paycell.ledger", "paycell.platform"])
def test_docstring_examples_run_as_written(module_name: str) -> None:
    module = importlib.import_module(module_name)
    failures, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert attempted > 0
    assert failures == 0
