"""Every test gets its own directory of destination decision records."""

import pytest


@pytest.fixture(autouse=True)
def _decision_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTS_DECISION_DIR", str(tmp_path / "decisions"))
