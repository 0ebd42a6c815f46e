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
    from service.app import create_app
    from service.server import serve

    serve(
        create_app(settings),
        settings.host,
        settings.port,
        settings.log_level,
        settings.graceful_shutdown_s,
    )


if __name__ == "__main__":
    main()
