"""Fixtures shared by the LLM-layer tests."""
import pytest
from tests.llm.loopback_server import LoopbackServer


@pytest.fixture
def srv():
    """A loopback OpenAI-compatible server (the real client talks to it over HTTP)."""
    with LoopbackServer() as s:
        yield s
