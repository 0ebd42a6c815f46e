"""A real PostgreSQL server with the pgvector extension for the tests, started once per
session (import the `pg_dsn` fixture into a test module: `from tests.bulk.pg_server import
pg_dsn  # noqa: F401`).

Where it comes from, first that works:
1. `POLYGLOT_TEST_PG_DSN`: a server you run (it needs pgvector installed; the tests create
   and drop their own tables, one per test, named `test_*`).
2. the PyPI package `pgserver` (in the `dev` extra): PostgreSQL 16 + pgvector 0.6 binaries
   in a wheel. It initialises a cluster in a fresh temporary folder and serves it on a unix
   socket there (no TCP port); as root it runs the server as the system user `pgserver`,
   which it creates with `useradd` (PostgreSQL refuses to run as root). The server is
   stopped and its folder deleted at the end of the session.

Debian 12 (bookworm) ships PostgreSQL 15 but no pgvector package (`apt-cache search pgvector`
finds none; PGDG's apt repository is not reachable here), so the Debian route is not used.

The fixture skips, naming the reason, only when neither is available or the server does
not start."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

ENV_DSN = "POLYGLOT_TEST_PG_DSN"


def start_pgserver(folder: str):
    """The running `pgserver.PostgresServer` over `folder` (initialised on first use);
    raises whatever pgserver raises when it cannot start."""
    import pgserver

    return pgserver.get_server(folder, cleanup_mode="delete")


def check_vector(dsn: str) -> None:
    """Raise unless `dsn` accepts connections and has (or can create) pgvector."""
    import psycopg

    with psycopg.connect(dsn, connect_timeout=10) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A postgresql:// DSN of a running server with pgvector (see the module docstring)."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[dev]')")
    pytest.importorskip("pgvector", reason="pgvector is not installed (pip install -e '.[dev]')")
    if os.environ.get(ENV_DSN):
        dsn = os.environ[ENV_DSN]
        try:
            check_vector(dsn)
        except Exception as exc:  # noqa: BLE001 - the reason is what the skip reports
            pytest.skip(f"{ENV_DSN} server unusable: {type(exc).__name__}: {exc}")
        yield dsn
        return
    pytest.importorskip(
        "pgserver",
        reason="no PostgreSQL with pgvector: pgserver is not installed (pip install -e "
        f"'.[dev]') and {ENV_DSN} is not set",
    )
    try:
        yield shared_server_dsn()
    finally:
        stop_shared_server()


# one server per test process, whichever test modules import the fixture (each import is a
# fixture definition of its own, so the server lives here rather than in the fixture)
_SHARED: dict[str, object] = {}


def shared_server_dsn() -> str:
    """The DSN of this process's pgserver, started on first call; skips with the reason
    when it did not start (and does not try again)."""
    if not _SHARED:
        # short path: the unix socket lives in it (107-byte limit)
        folder = tempfile.mkdtemp(prefix="pgv-")
        try:
            server = start_pgserver(folder)
            _SHARED["server"] = server
            _SHARED["dsn"] = server.get_uri()
            check_vector(_SHARED["dsn"])
        except Exception as exc:  # noqa: BLE001 - the reason is what the skip reports
            _SHARED["error"] = (
                f"PostgreSQL (pgserver) did not start in {folder}: {type(exc).__name__}: {exc}"
            )
    if "error" in _SHARED:
        pytest.skip(str(_SHARED["error"]))
    return str(_SHARED["dsn"])


def stop_shared_server() -> None:
    """Stop the server and delete its folder (at the end of the session; idempotent)."""
    server = _SHARED.get("server")
    _SHARED.clear()
    if server is not None:
        server.cleanup()
