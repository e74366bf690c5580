"""Fixtures shared by the OpenVLA-OFT runtime tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def oft_generated_graph(generated_oft_plugin):
    """The runtime has no built-in OpenVLA-OFT graph: run on the generated one (tests/conftest.py),
    re-selected in case another test loaded a wrong-knob plugin."""
    generated_oft_plugin.reload()
    return generated_oft_plugin


@pytest.fixture(scope="module")
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
