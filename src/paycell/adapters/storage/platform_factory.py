"""Open the right platform backend (ledger plus platform tables) for a database URL or path."""

from paycell.adapters.storage.factory import is_postgres_url
from paycell.service.platform_ports import PlatformStore


def open_platform_store(url: str) -> PlatformStore:
    """A file path or `sqlite:///path` opens SQLite; `postgresql://...` opens PostgreSQL."""
    if is_postgres_url(url):
        from paycell.adapters.storage.postgres_platform import PostgresPlatformStore

        return PostgresPlatformStore(url)
    from paycell.adapters.storage.sqlite_platform import SqlitePlatformStore

    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
    return SqlitePlatformStore(path)
