from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "official_gdpw"


@pytest.fixture(scope="session")
def official_fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"reference fixtures missing: {FIXTURES} (shared/ must sit beside the checkout)")
    return FIXTURES
