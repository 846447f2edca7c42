from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def runbooks_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The committed runbook set, copied: a worker and the replay must read the same
    files even while someone edits runbooks/ in the working tree."""
    archive = subprocess.run(["git", "archive", "HEAD", "runbooks"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp_path / "committed", filter="data")
    path = tmp_path / "committed" / "runbooks"
    monkeypatch.setenv("OPSLOOP_RUNBOOKS_DIR", str(path))
    return path
