"""The suite's own helpers clean up after themselves even when what they start fails."""

from __future__ import annotations

import gc
import socket
import warnings

import pytest
from aiosmtpd.handlers import Sink

from tests.conftest import start_smtp_server


def test_an_smtp_server_that_cannot_bind_leaves_no_event_loop_open(free_port: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port))
        taken.listen()
        # Address in use, or (on a busy machine) no word from the server thread in time
        with pytest.raises((OSError, TimeoutError)):
            start_smtp_server(Sink(), free_port, ready_timeout=1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
