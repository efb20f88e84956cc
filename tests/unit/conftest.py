"""Unit tests never touch the network: sockets are disabled (Unix sockets stay, asyncio
needs them for its self-pipe)."""

from collections.abc import Iterator

import pytest
from pytest_socket import disable_socket, enable_socket


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    disable_socket(allow_unix_socket=True)
    yield
    enable_socket()
