"""Session fixtures: one real cluster (controller, tiny chat and embedding workers, gateway)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from openai import AsyncOpenAI, OpenAI

from tests.integration.processes import Cluster, wait_until

CHAT_MODEL = "tiny-chat"
EMBEDDING_MODEL = "tiny-embed"


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, tiny_chat_model_dir: Path, tiny_embedding_model_dir: Path
) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("home")
    running = Cluster(tmp_path_factory.mktemp("logs"), home)
    try:
        running.start_controller()
        running.start_worker("chat", str(tiny_chat_model_dir), "--model-name", CHAT_MODEL)
        running.start_worker("embed", str(tiny_embedding_model_dir), "--model-name", EMBEDDING_MODEL)
        running.start_gateway()
        assert wait_until(lambda: len(running.model_ids()) == 2, timeout=10), running.logs()
        running.wait_past_startup_grace()  # so an unknown model is a 404, not "still warming up"
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(cluster: Cluster) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{cluster.gateway_url}/v1", api_key="unused", max_retries=0, timeout=60) as openai:
        yield openai


@pytest.fixture
async def async_client(cluster: Cluster) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{cluster.gateway_url}/v1", api_key="unused", max_retries=0, timeout=60) as openai:
        yield openai
