"""Fixtures shared by the LLM-layer tests."""
import pytest
from tests.llm.loopback_server import KEY_ENV, SECRET, LoopbackServer


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    """The client's key comes from the environment, as in real use (loopback_server.client_config names it)."""
    monkeypatch.setenv(KEY_ENV, SECRET)


@pytest.fixture
def srv():
    """A loopback OpenAI-compatible server (the real client talks to it over HTTP)."""
    with LoopbackServer() as s:
        yield s
