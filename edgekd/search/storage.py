"""Where the search study lives, and the checks that a storage URL works before any work starts.

- `sqlite:///RUN_DIR/search/study.db` (the default): one process. Optuna's FAQ: never SQLite for
  parallel workers (its file lock serialises them, and on a network file system it breaks).
- `journal:PATH` (`journal:///abs/study.log`, or a relative path): an Optuna JournalStorage, an
  append-only log file: several worker processes on one machine.
- `postgresql://user@host[:port]/db` (or any SQLAlchemy URL with its driver installed): an Optuna
  RDBStorage: workers on several machines. `postgresql://` uses psycopg 3, from the `postgres`
  extra; `postgresql+psycopg2://` picks psycopg2 instead.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

from edgekd.errors import MissingDependencyError, UserError
from edgekd.io import first_line

log = logging.getLogger(__name__)

JOURNAL = "journal:"
POSTGRES_EXTRA = "postgres"
CONNECT_TIMEOUT_S = 10
# Workers that start together on an empty database race to create Optuna's tables; the loser
# sees a duplicate-key error and simply opens what the winner made.
_OPEN_ATTEMPTS = 4


def storage_kind(url: str) -> str:
    """"sqlite", "journal" or "rdb" (any other SQLAlchemy database)."""
    if url.startswith(JOURNAL):
        return "journal"
    if url.startswith("sqlite:"):
        return "sqlite"
    return "rdb"


def journal_path(url: str) -> Path:
    path = url.removeprefix(JOURNAL).removeprefix("//")  # journal:///abs/path, like sqlite:///
    if not path:
        raise UserError(f"--storage {url!r} names no file; e.g. journal:///shared/disk/study.log")
    return Path(path).expanduser()


def normalized_url(url: str) -> str:
    """The URL as a run records it: a journal's path made absolute, so that a resumed run (or the
    same command from another directory) finds the same file."""
    if storage_kind(url) == "journal":
        return JOURNAL + "//" + str(journal_path(url).resolve())
    return url


def masked(url: str) -> str:
    """The URL without its password, for messages and logs."""
    if storage_kind(url) != "rdb":
        return url
    try:
        return _sqlalchemy_url(url).render_as_string(hide_password=True)
    except UserError:
        return url


def _sqlalchemy_url(url: str):
    import sqlalchemy.engine
    import sqlalchemy.exc

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise UserError(f"invalid --storage URL {url!r}: {first_line(exc)}; e.g. postgresql://user@host:5432/db, "
                        "journal:///path/study.log or sqlite:///path/study.db") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, from the postgres extra
    return parsed


def _load_driver(url) -> None:
    """Import the database driver now, so that a missing one names what to install."""
    import sqlalchemy.exc

    try:
        dialect = url.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError as exc:  # an unknown scheme
        raise UserError(f"invalid --storage URL: unknown database {url.drivername!r} ({first_line(exc)})") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        if url.drivername == "postgresql+psycopg":
            raise MissingDependencyError("psycopg (PostgreSQL driver)", POSTGRES_EXTRA) from None
        raise UserError(f"--storage {url.drivername} needs a database driver that is not installed: "
                        f"{first_line(exc)}") from None


def check_storage(url: str) -> None:
    """Fail before any work on a storage that cannot hold the study: a bad URL, a missing driver
    (naming the pip extra), a database that does not answer, a journal in a missing directory."""
    kind = storage_kind(url)
    if kind == "journal":
        path = journal_path(url)
        if not path.parent.is_dir():
            raise UserError(f"cannot open the search study storage {url}: directory {path.parent} does not exist")
        if path.is_dir():
            raise UserError(f"--storage {url}: {path} is a directory; name a file, e.g. {path / 'study.log'}")
        return
    if kind == "sqlite":
        database = _sqlalchemy_url(url).database
        if database and database != ":memory:" and not Path(database).parent.is_dir():
            raise UserError(f"cannot open the search study storage {url}: directory {Path(database).parent} "
                            "does not exist")
        return
    import sqlalchemy
    import sqlalchemy.exc

    parsed = _sqlalchemy_url(url)
    _load_driver(parsed)
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if parsed.get_backend_name() == "postgresql" else {}
    engine = sqlalchemy.create_engine(parsed, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.DBAPIError as exc:
        raise UserError(f"cannot reach the search study database {masked(url)}: "
                        f"{first_line(getattr(exc, 'orig', exc))}") from None
    finally:
        engine.dispose()


def open_storage(url: str, *, heartbeat_s: int | None):
    """The Optuna storage for `url`. For a database, `heartbeat_s` turns on Optuna's heartbeat: a
    running trial whose worker has been silent for 3 x heartbeat_s is failed by the next worker
    that looks (`optuna.storages.fail_stale_trials`)."""
    import optuna

    kind = storage_kind(url)
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = journal_path(url)
        try:
            return JournalStorage(JournalFileBackend(str(path), lock_obj=FlockJournalLock(path)))
        except (ValueError, OSError) as exc:  # a file that is not an Optuna journal
            raise UserError(f"cannot open the search study storage {url}: {first_line(exc)}; "
                            "it is not an Optuna journal, or it is damaged") from None
    if kind == "sqlite":
        return _sqlite_storage(url, heartbeat_s)
    import sqlalchemy.exc

    parsed = _sqlalchemy_url(url)
    _load_driver(parsed)
    engine_kwargs = {"pool_pre_ping": True}  # a connection idle through a long trial may have been dropped
    if parsed.get_backend_name() == "postgresql":
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    for attempt in range(1, _OPEN_ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna; we rely on it knowingly
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    parsed.render_as_string(hide_password=False), engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_s, grace_period=None if heartbeat_s is None else 3 * heartbeat_s,
                )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            if attempt == _OPEN_ATTEMPTS:
                raise UserError(f"cannot open the search study storage {masked(url)}: "
                                f"{first_line(getattr(exc, 'orig', exc))}") from None
            log.debug("search: storage tables created by another worker meanwhile (%s); opening again", exc)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def _sqlite_storage(url: str, heartbeat_s: int | None):
    """SQLite with a write-ahead log and no fsync per commit: Optuna commits several times per
    trial, and on a busy disk the default (fsync each time) cost more than scoring the trial.
    A crash can lose the last trials, never corrupt the file; a kill loses nothing."""
    import optuna
    import sqlalchemy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs={"connect_args": {"timeout": 60}}, heartbeat_interval=heartbeat_s,
            grace_period=None if heartbeat_s is None else 3 * heartbeat_s)

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _pragmas(connection, _record):
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    storage.engine.dispose()  # connections made before the listener existed would lack the pragmas
    return storage


class FlockJournalLock:
    """The journal's write lock as an flock(2) on `<journal>.flock`. Optuna's own file locks (a
    symlink or an O_EXCL file, made for NFSv2/v3) outlive a killed writer and are broken only
    after a 30 s grace period, stalling every other worker; the kernel drops an flock the moment
    its process dies. Linux maps flock onto NFS byte-range locks, so a shared disk works too."""

    def __init__(self, journal: Path):
        self.path = Path(f"{journal}.flock")
        self._fd = -1

    def acquire(self) -> bool:
        import fcntl

        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return True

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = -1
