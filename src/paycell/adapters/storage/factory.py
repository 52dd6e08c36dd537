"""Open the right backend for a database URL or path."""

from paycell.service.ports import LedgerStore


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://"))


def open_store(url: str) -> LedgerStore:
    """A file path or `sqlite:///path` opens SQLite; `postgresql://...` opens PostgreSQL."""
    if is_postgres_url(url):
        from paycell.adapters.storage.postgres import PostgresStore

        return PostgresStore(url)
    from paycell.adapters.storage.sqlite import SqliteStore

    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
    return SqliteStore(path)
