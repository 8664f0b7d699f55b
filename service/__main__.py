"""``python -m service --model-repository models --host 0.0.0.0 --port 8000``.

Every flag can also be set by environment variable: ``--max-batch-size 32`` is ``RESNET_SERVE_MAX_BATCH_SIZE=32``.
On SIGTERM (or Ctrl-C) the server drains: readiness answers 503, new requests are refused, requests already
accepted finish (bounded by ``--drain-timeout-s``), then it exits 0. A second signal exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import typing

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .app import create_app
from .middleware import configure_logging
from .settings import Settings

log = logging.getLogger("resnet_serve")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m service", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = f"RESNET_SERVE_{name.upper()}"
        help_text = f"{field.description} [env {env}; default {field.get_default(call_default_factory=True)!r}]"
        annotation = field.annotation
        if annotation is bool:
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(annotation) is typing.Literal:
            p.add_argument(flag, dest=name, choices=typing.get_args(annotation), default=None, help=help_text)
        else:
            p.add_argument(flag, dest=name, default=None, metavar=name.split("_")[-1].upper(), help=help_text)
    return p


class DrainingServer(uvicorn.Server):
    """uvicorn, with a drain before exit: the first signal drains, a second one forces the exit."""

    def __init__(self, config: uvicorn.Config, app) -> None:
        super().__init__(config)
        self.app, self.draining = app, False

    def handle_exit(self, sig: int, frame) -> None:
        if self.draining:
            self.force_exit = True
            return super().handle_exit(sig, frame)
        self.draining = True
        asyncio.get_event_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        state = getattr(self.app.state, "service", None)
        if state is not None:
            log.info("draining: %d requests in flight", state.admission.inflight)
            finished = await state.admission.drain(state.settings.drain_timeout_s)
            log.info("drained" if finished else "drain timeout: exiting with requests in flight")
        self.should_exit = True


class IdleTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, with its keep-alive timer also started when a connection opens: uvicorn closes an
    idle kept-alive connection after ``timeout_keep_alive``, but leaves one that never sends a request open for
    good, and enough of those hold file descriptors and memory. Any data received stops the timer (uvicorn's own
    ``data_received``); a slow body is bounded by ``body_read_timeout_s`` (middleware.py)."""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    settings = Settings(**overrides)
    configure_logging(settings.log_format, settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # our middleware writes the access log, with request ids
        http=IdleTimeoutProtocol,
        timeout_keep_alive=settings.idle_timeout_s,
        timeout_graceful_shutdown=max(int(settings.drain_timeout_s), 1),
    )
    DrainingServer(config, app).run()


if __name__ == "__main__":
    main()
