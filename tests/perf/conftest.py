"""Fixtures for the performance-path tests (graph reuse, kernels, repacking, attention paths)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def oft_generated_graph(generated_oft_plugin):
    """The generated OpenVLA-OFT graph (tests/conftest.py), re-selected in case another test loaded a
    different plugin."""
    generated_oft_plugin.reload()
    return generated_oft_plugin
