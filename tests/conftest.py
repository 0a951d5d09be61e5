"""Shared fixtures. Real benchmark data is read from ../shared/data (or $JAXREC_SHARED_DATA)
and tests that need it skip when it is absent; nothing is ever downloaded."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# One persistent XLA compilation cache for the whole test session, this process and every
# process a test starts (servers, workers, trainers inherit the environment): many tests build
# a server or a trainer for the same small model, and each fresh jit wrapper would compile the
# same programs again. Compiled programs are keyed by their HLO and options, so a hit is the
# same program; JAXREC_TEST_COMPILE_CACHE=0 turns it off (to time the suite without it).
_CACHE = None
if os.environ.get("JAXREC_TEST_COMPILE_CACHE", "1") != "0" and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="jaxrec-test-xla-cache-")
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")


def pytest_sessionfinish(session, exitstatus):
    if _CACHE is not None:
        shutil.rmtree(_CACHE, ignore_errors=True)

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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One small trained retrieval run (SASRec, synthetic:tiny, full-softmax CE, one epoch),
    trained once for the whole test session: for tests that only read a run (serve it,
    restore it, mine it). A test that changes its run directory trains its own."""
    from jaxrec.train import Config, train

    d = tmp_path_factory.mktemp("tiny") / "run"
    train(Config(model="sasrec/small", data="synthetic:tiny", loss="ce", batch_size=32, epochs=1), d,
          progress=False)
    return d


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
