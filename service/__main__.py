"""`python -m service` / `polyglot-embed`: settings from flags and EMBED_* variables,
then uvicorn."""

from __future__ import annotations

import logging
import os

from pydantic_settings import CliApp

from service.config import Settings


def main(argv: list[str] | None = None) -> None:
    settings = CliApp.run(Settings, cli_args=argv) if argv is not None else CliApp.run(Settings)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    import uvicorn

    from service.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.graceful_shutdown_s) or None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
