"""Outputs stay what they were: a tiny seeded run's records, rows and history against stored files.

The expected files were written by ``python -m tests.golden.make`` before the code was reorganised; a difference
here is a change of behaviour.
"""

from __future__ import annotations

import pytest

from tests.golden.make import EXPECTED, FILES, normalized, produce


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory):
    return produce(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("name", FILES)
def test_output_matches_the_stored_file(golden_run, name):
    assert normalized(golden_run, name) == (EXPECTED / name).read_text()
