"""The hostile-input catalogue: a shared tiny pipeline and a session summary of how every hostile input was handled."""

import pytest

from . import catalogue


@pytest.fixture(scope="session")
def pipe():
    """The built-in default at the smallest atlas (these cases test tracking and input handling, not quality)."""
    from fhavatar import FHAvatarPipeline

    pipeline = FHAvatarPipeline.default(resolution=32)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Tell the catalogue which known defect (if any) the running test is marked with."""
    key = catalogue.defect_of(item)
    if key:
        catalogue.CURRENT_DEFECT.append(key)
    try:
        yield
    finally:
        catalogue.CURRENT_DEFECT.clear()


def pytest_terminal_summary(terminalreporter):
    lines = catalogue.summary_lines()
    if lines:
        terminalreporter.section("hostile inputs")
        for line in lines:
            terminalreporter.write_line(line)
