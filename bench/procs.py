"""Starting servers for measurement and tests: a free local port, and waiting until a child process answers."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(proc: subprocess.Popen, url: str, timeout_s: float, ready_statuses: tuple[int, ...] = (200,)) -> str | None:
    """Wait until GET ``url`` answers one of ``ready_statuses`` (None), ``proc`` exits or ``timeout_s`` passes
    (the reason, as words). Used by bench/http_load.py and the service-process tests."""
    import httpx

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            return f"exited with status {proc.returncode}"
        try:
            if httpx.get(url, timeout=2).status_code in ready_statuses:
                return None
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # a child's start-up has no event to wait on; its readiness is only seen by asking
    return f"not ready after {timeout_s:.0f} s"
