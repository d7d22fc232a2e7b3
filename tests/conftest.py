import sys
import zlib
from pathlib import Path

import pytest
import torch

# train/ holds the training-only code (the bundled model's trainer), outside the package
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a usable CUDA GPU")
    if not torch.cuda.is_available():
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip_cuda)


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    # Fresh random inputs per test, reproducible from the test's name (crc32, not hash():
    # Python salts str hashes per process unless PYTHONHASHSEED is set).
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def one_thread():
    # Two intra-op threads on a 2-core machine shared with another job run 20-30x slower
    # (measured); one thread is steady. Restored after the test.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
