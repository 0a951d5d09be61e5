"""Shared fixtures. Real benchmark data is read from ../shared/data (or $JAXREC_SHARED_DATA)
and tests that need it skip when it is absent; nothing is ever downloaded."""

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("JAXREC_SHARED_DATA",
                             Path(__file__).resolve().parents[2] / "shared" / "data"))
ML1M = SHARED / "ml-1m" / "ml-1m.txt"


@pytest.fixture(scope="session", autouse=True)
def _scratch_cwd(tmp_path_factory):
    """Run every test in a scratch directory: what a server or command writes to the working
    directory by default (the event store's jaxrec-events.sqlite, runs/) stays out of the tree."""
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(old)


@pytest.fixture
def ml1m_path():
    if not ML1M.exists():
        pytest.skip(f"real data not present at {ML1M}")
    return ML1M


@pytest.fixture
def write(tmp_path):
    """write(name, text_or_bytes) -> path of a new file in a temp dir."""
    def _write(name, content):
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        return p
    return _write
