"""Shared pytest fixtures."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_reference():
    """The public LRP reference data (shared/reference beside the checkout, or
    $CAFFELRP_SHARED_REFERENCE); tests that need it are skipped where it is absent."""
    path = Path(os.environ.get("CAFFELRP_SHARED_REFERENCE", REPO.parent / "shared" / "reference"))
    if not path.is_dir():
        pytest.skip(f"shared reference data not found at {path}: set CAFFELRP_SHARED_REFERENCE")
    return path
