"""The suite's own rules: a test marked `needs(...)` skips with the reason where those packages are missing, and
fails instead under RNNLAB_NO_SKIP=1 (CI)."""

from __future__ import annotations

import pytest

from tests.conftest import missing_modules, pytest_runtest_setup


class Item:
    """The part of a pytest item that `pytest_runtest_setup` reads."""

    def __init__(self, *modules: str):
        self.needs = pytest.mark.needs(*modules).mark

    def get_closest_marker(self, name: str):
        return self.needs if name == "needs" else None


def test_missing_modules_are_named_dotted_ones_and_missing_parents_too():
    assert missing_modules(["json", "os.path", "no_such_module_xyz", "no_such_package_xyz.sub"]) == \
        ["no_such_module_xyz", "no_such_package_xyz.sub"]


def test_a_test_needing_a_missing_package_skips_with_the_reason_or_fails_in_ci(monkeypatch):
    monkeypatch.delenv("RNNLAB_NO_SKIP", raising=False)
    pytest_runtest_setup(Item("json", "torch"))  # all installed: the test runs
    reason = r"^needs no_such_module_xyz, not installed here \(in the dev extra: pip install -e '\.\[dev\]'\)$"
    with pytest.raises(pytest.skip.Exception, match=reason):
        pytest_runtest_setup(Item("json", "no_such_module_xyz"))
    monkeypatch.setenv("RNNLAB_NO_SKIP", "1")
    with pytest.raises(pytest.fail.Exception, match=reason):
        pytest_runtest_setup(Item("json", "no_such_module_xyz"))
