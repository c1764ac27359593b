"""The fault matrix's size, by interface: each case is a parametrized test of its own file."""

from __future__ import annotations

from . import test_api_refusals, test_cli_refusals, test_fault_matrix, test_web_refusals

CLI = len(test_fault_matrix.CASES) + len(test_cli_refusals.CASES)
WEB = len(test_web_refusals.CASES)
API = len(test_api_refusals.CASES)


def test_the_matrix_covers_every_interface():
    assert CLI >= 90 and WEB >= 40 and API >= 15, (CLI, WEB, API)
    names = [c.name for c in test_fault_matrix.CASES + test_cli_refusals.CASES]
    assert len(names) == len(set(names)), "two CLI cases share a name"
