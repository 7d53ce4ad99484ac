"""--storage URLs: each kind opens, and each way of being wrong is one line (exit 2) before any work."""

from __future__ import annotations

import sys

import pytest
from servers import free_port
from tiny_recipe import tiny_args

from edgekd.cli import main
from edgekd.errors import MissingDependencyError, UserError
from edgekd.search import engine
from edgekd.search.storage import (
    check_storage,
    journal_path,
    masked,
    normalized_url,
    storage_kind,
)


def test_kinds_and_journal_paths(tmp_path, monkeypatch):
    assert [storage_kind(u) for u in ("sqlite:///x.db", "journal:///x.log", "postgresql://h/db")] == \
        ["sqlite", "journal", "rdb"]
    assert journal_path("journal:///srv/study.log").as_posix() == "/srv/study.log"
    monkeypatch.chdir(tmp_path)
    assert normalized_url("journal:runs/study.log") == f"journal://{tmp_path / 'runs' / 'study.log'}"
    assert masked("postgresql://me:secret@db.lan:5432/edgekd") == "postgresql+psycopg://me:***@db.lan:5432/edgekd"


@pytest.mark.parametrize("url, message", [
    ("postgresql://me@127.0.0.1:notaport/db", "invalid --storage URL"),
    ("nosuchdb://host/db", "unknown database 'nosuchdb'"),
    ("postgresql+pg8000://me@127.0.0.1/db", "needs a database driver that is not installed"),
    ("journal:///no/such/dir/study.log", "directory /no/such/dir does not exist"),
    ("sqlite:////no/such/dir/study.db", "cannot open the search study storage"),
])
def test_a_storage_that_cannot_work_is_one_line(url, message):
    with pytest.raises(UserError, match=message) as caught:
        check_storage(url)
    assert "\n" not in str(caught.value)


def test_a_missing_postgres_driver_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what `import psycopg` meets when it is not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgekd\[postgres\]'"):
        check_storage("postgresql://me@127.0.0.1:5432/db")


def test_an_unreachable_database_fails_fast():
    with pytest.raises(UserError, match=r"cannot reach the search study database .*refused"):
        check_storage(f"postgresql://me:secret@127.0.0.1:{free_port()}/db")


def test_a_database_that_does_not_exist_on_a_live_server(postgres):
    with pytest.raises(UserError, match='cannot reach.*"nope" does not exist'):
        check_storage(postgres.url("nope"))
    check_storage(postgres.url())  # the server's own database answers


def test_a_journal_that_is_not_one_is_a_clear_error_and_kept(tmp_path):
    path = tmp_path / "study.log"
    path.write_text('{"op_code": 0, "worker_id": "x"\nnot json at all\n')
    with pytest.raises(UserError, match="not an Optuna journal"):
        engine.open_study(f"journal:///{path}", "s", seed=0)
    assert path.read_text().startswith('{"op_code"')


def test_cli_checks_storage_before_creating_the_run_dir(tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["search", "--runs-dir", str(runs), "--name", "w", *tiny_args(),
                 "--storage", f"postgresql://me@127.0.0.1:{free_port()}/db"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("edgekd: error:")]
    assert code == 2 and len(lines) == 1 and "cannot reach the search study database" in lines[0]
    assert not runs.exists()


def test_cli_repeated_device_makes_a_pool_and_a_duplicate_is_refused(tmp_path, capsys):
    code = main(["search", "--runs-dir", str(tmp_path), "--device", "ssh://pi@a", "--device", "ssh://pi@a"])
    assert code == 2 and "listed twice" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
