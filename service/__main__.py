"""`python -m service` / `polyglot-embed`: settings from flags and EMBED_* variables,
then uvicorn in this process (`--workers 1`) or N front ends and one engine core."""

from __future__ import annotations

import logging
import os
import sys

from pydantic import ValidationError
from pydantic_settings import CliApp

from service.config import Settings

STARTUP_FAILURE = 3  # uvicorn's exit status when the application cannot start


def load_settings(argv: list[str] | None = None) -> Settings:
    """Settings from flags and the environment; invalid ones end the process with a
    one-line message per problem (exit status 2), not a traceback."""
    try:
        return CliApp.run(Settings, cli_args=argv) if argv is not None else CliApp.run(Settings)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: "
            f"{str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors()
        ]
        print("invalid settings:\n  " + "\n  ".join(problems), file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(argv)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    from service.supervisor import resolve_workers, serve_workers

    workers = resolve_workers(settings)
    if workers > 1:
        sys.exit(serve_workers(settings, workers))
    from service.app import create_app
    from service.server import serve

    serve(create_app(settings, pipeline=load_pipeline(settings)), settings)


def load_pipeline(settings: Settings):
    """The served pipeline (service.engine.pipeline.served_pipeline), built before the server
    starts: a model file the service can neither serve nor rebuild (damaged on a read-only
    cache, stale, not writable) ends the process with one line naming it (exit status 3,
    uvicorn's start-up failure), not a traceback."""
    from service.artifacts import ArtefactError
    from service.engine.pipeline import served_pipeline

    try:
        return served_pipeline(settings)
    except ArtefactError as exc:
        logging.getLogger("service").error("cannot start: %s", exc)
        raise SystemExit(STARTUP_FAILURE) from None


if __name__ == "__main__":
    main()
