import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    run_slow = os.environ.get("LESS_RUN_SLOW") == "1"
    has_cuda = torch.cuda.is_available()
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: set LESS_RUN_SLOW=1 to run"))
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="cuda: no CUDA GPU on this machine"))
