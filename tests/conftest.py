"""Every test starts from the same random state, whatever ran before it (order-independent draws of
weights, inputs and BN statistics), and torch uses one thread per test process unless told otherwise."""
import os
import random

import numpy as np
import pytest
import torch

torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    """``REP_BACKBONES_TEST_ORDER=reverse`` runs the suite backwards: with seeded tests, the result
    must not depend on what ran before (run both orders before a landing)."""
    if os.environ.get('REP_BACKBONES_TEST_ORDER') == 'reverse':
        items.reverse()
