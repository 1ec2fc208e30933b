"""The rawsse server the client tests share (one subprocess for the whole session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.client.client_support import client_app_server


@pytest.fixture(scope="session")
def app_url() -> Iterator[str]:
    """Base URL of ``rawsse serve tests.client.client_support:client_app``."""
    with client_app_server() as url:
        yield url
