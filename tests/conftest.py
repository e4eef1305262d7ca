from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures" / "official_gdpw"


def _missing_shared(what: Path) -> None:
    """Skip with the reason in a user's clone; fail in CI (CI=true), where ../shared/ must be laid out."""
    reason = f"reference data missing: {what} (../shared/ sits beside the project's own checkout only)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def shared_cases(sub: str, pattern: str = "*") -> list[Any]:
    """Every case of ``../shared/<sub>`` matching ``pattern`` (files or folders) as pytest params named by
    the case; where there is none, one param that skips (fails with CI=true) when it runs."""
    folder = SHARED / sub
    cases = sorted(folder.glob(pattern)) if folder.is_dir() else []
    if cases:
        return [pytest.param(p, id=p.stem if p.is_file() else p.name) for p in cases]
    return [pytest.param(folder / pattern, id="missing", marks=pytest.mark.shared_missing)]


def first_case(sub: str, pattern: str = "*") -> Path:
    """The first case of ``../shared/<sub>`` (for fixtures that borrow its data); skips (CI: fails) without one."""
    param = shared_cases(sub, pattern)[0]
    if param.marks:
        _missing_shared(param.values[0])
    return param.values[0]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "shared_missing: the case folder of ../shared/ is absent or empty")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("shared_missing") is not None:
        case = getattr(item, "callspec", None)
        _missing_shared(next(iter(case.params.values())) if case is not None else SHARED)


@pytest.fixture(scope="session")
def official_fixtures() -> Path:
    if not FIXTURES.is_dir():
        _missing_shared(FIXTURES)
    return FIXTURES
