"""Prefect's temporary local server (runs without ``PREFECT_API_URL``) keeps its SQLite database under
``PREFECT_HOME``. Two runs started together on a fresh ``PREFECT_HOME`` each start such a server, and both
create the database's tables: the loser printed a 100-line traceback (``table artifact already exists``). The
first contact is serialised instead: the database is created (migrated to Prefect's schema) under a lock before
the flow starts its server, which then finds it ready."""

from __future__ import annotations

from pathlib import Path

from lookalike_models.locking import serialized


def local_database() -> Path | None:
    """The SQLite file of the temporary server; None with a real server or another database."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url:
        return None
    secret = settings.server.database.connection_url
    url = secret.get_secret_value() if secret is not None else ""
    if not url.startswith("sqlite") or ":memory:" in url or ":///" not in url:
        return None
    return Path(url.split(":///", 1)[1])


def prepare_local_server() -> None:
    """Create the temporary server's database once, one process at a time (a no-op once it is ready)."""
    import prefect

    database = local_database()
    if database is None:
        return
    ready = database.with_name(f".{database.name}.ready-{prefect.__version__}")
    if ready.exists() and database.exists():
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with serialized(f"{database}.init.lock"):
        if ready.exists() and database.exists():  # another run created it while this one waited
            return
        import asyncio

        from prefect.server.database import provide_database_interface

        asyncio.run(provide_database_interface().create_db())  # Prefect's migrations, as its server runs them
        ready.touch()
