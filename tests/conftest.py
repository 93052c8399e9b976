"""The fixtures that start real servers on loopback: `ascrm serve` (per test, module or session) and redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from tests.support.redis import RedisServer
from tests.support.server import Server, ServerFactory, kill_leftovers, platform_config

pytest_plugins = ["tests.support.needs"]  # a tool a test needs: skipped where missing, an error in CI


def pytest_sessionfinish() -> None:
    """Never leave a server behind, even when a test or fixture failed before stopping it."""
    kill_leftovers()


def _factory(folders: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    factory = ServerFactory(folders)
    yield factory
    factory.stop_all()


@pytest.fixture
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Starts `ascrm serve` processes for one test: `serve(config, folder=..., admin=..., prefix=...)`."""
    yield from _factory(tmp_path_factory)


@pytest.fixture(scope="module")
def serve_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Like serve, for servers a module's tests share."""
    yield from _factory(tmp_path_factory)


@pytest.fixture(scope="session")
def serve_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Like serve, for servers the whole session shares."""
    yield from _factory(tmp_path_factory)


@pytest.fixture(scope="session")
def server(serve_session: ServerFactory) -> Server:
    """One ascrm server for the session, served under the prefix /autosecretary."""
    config = platform_config(root_path="/autosecretary")
    config["auth"]["limits"] = {"per_client": 100_000}  # the tests send many wrong credentials from one address
    return serve_session(config, prefix="/autosecretary")


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    """A client of the session's server with the platform's credentials."""
    with server.client() as http:
        yield http


def _redis(folder: Path) -> Iterator[RedisServer]:
    redis = RedisServer(folder)
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for a module's tests (each uses its own key prefix); skipped when not installed."""
    yield from _redis(tmp_path_factory.mktemp("redis"))


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server for one test, which may stop, restart and pause it; skipped when not installed."""
    yield from _redis(tmp_path_factory.mktemp("own-redis"))


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A certificate authority the tests' TLS servers and clients share."""
    return trustme.CA()
