"""Store faults a shared server meets: busy, read-only, full, missing, damaged, deleted or replaced under it,
and several servers on one folder. Only a file SQLite calls damaged is ever moved aside.

Simulations, honestly: tests run as root, where chmod does not stop writes, so "read-only" is SQLite's
own answer under ``PRAGMA query_only`` (SQLITE_READONLY), and "disk full" is SQLite's answer when the
database reaches ``PRAGMA max_page_count`` (SQLITE_FULL, the code a full disk gives). Both go through
`RunStore._configure`, the one place every connection is set up.
"""

from __future__ import annotations

import os
import sqlite3
import typing

import pytest
from runs_factory import DIGITS, PAIR

from resnet_viz.store import RunStore, StoreError, StoreErrorKind
from resnet_viz.training import TrainConfig, train_models


@pytest.fixture(scope="module")
def trained():
    return train_models(PAIR, TrainConfig(epochs=1, warmup_steps=0), DIGITS)


@pytest.fixture
def store(tmp_path, trained) -> RunStore:
    store = RunStore(tmp_path / "store", busy_timeout_s=0.05)
    store.save(*trained)
    return store


class ReadOnlyStore(RunStore):
    def _configure(self, conn: sqlite3.Connection) -> None:
        super()._configure(conn)
        conn.execute("PRAGMA query_only = 1")


class FullStore(RunStore):
    def _configure(self, conn: sqlite3.Connection) -> None:
        super()._configure(conn)
        conn.execute("PRAGMA max_page_count = 8")  # the database cannot grow: SQLITE_FULL on the next write


def _files(store: RunStore) -> set[str]:
    return {p.name for p in store.directory.iterdir()}


def _save_another(store: RunStore, trained) -> str:
    return store.save(*trained, skip_events=[("residual", 1, 0.5)])  # a new key for the same records


@pytest.mark.parametrize(("cls", "kind"), [(ReadOnlyStore, "readonly"), (FullStore, "full")])
def test_a_write_that_fails_says_the_run_was_not_saved_and_moves_nothing(store, trained, cls, kind):
    faulty = cls(store.directory)
    assert [r.key for r in faulty.list_runs()] == [r.key for r in store.list_runs()]  # still readable
    with pytest.raises(StoreError) as err:
        _save_another(faulty, trained)
    assert err.value.kind == kind and not err.value.can_move_aside
    assert str(err.value).startswith("The run was not saved.")
    files = _files(store)
    with pytest.raises(StoreError) as err:
        faulty.quarantine()  # SQLite finds no damage: a full or read-only store is never moved aside
    assert err.value.kind == "refused" and _files(store) == files and len(store.list_runs()) == 1


def test_a_busy_store_is_reported_as_busy_and_nothing_is_moved(store, trained):
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another session holds the write lock
    try:
        fresh = RunStore(store.directory, busy_timeout_s=0.05)
        assert len(fresh.list_runs()) == 1  # readers are not blocked (WAL)
        with pytest.raises(StoreError) as err:
            _save_another(fresh, trained)
        assert err.value.kind == "busy" and "0.05 s" in str(err.value)
        with pytest.raises(StoreError) as err:
            fresh.quarantine()
        assert err.value.kind in ("busy", "refused") and store.path.exists()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert _save_another(fresh, trained) and len(fresh.list_runs()) == 2


def test_a_missing_folder_has_its_own_kind(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StoreError) as err:
        RunStore(tmp_path / "file" / "store").list_runs()
    assert err.value.kind == "missing" and "folder" in str(err.value)


def test_a_deleted_store_is_noticed_and_recreated(store, trained):
    assert len(store.list_runs()) == 1
    store.path.unlink()
    assert store.list_runs() == []  # not "no such table" from a cached readiness flag
    key = _save_another(store, trained)
    assert RunStore(store.directory).get(key) is not None  # really saved, in the new file


def test_a_stale_wal_of_a_deleted_store_never_replays_into_the_new_one(store, trained):
    keeper = sqlite3.connect(store.path)  # an open connection keeps the WAL file around
    keeper.execute("SELECT count(*) FROM runs").fetchone()
    _save_another(store, trained)
    wal = store.path.with_name(store.path.name + "-wal")
    assert wal.exists()
    store.path.unlink()  # deleted under a running server, its WAL left behind
    assert store.list_runs() == []
    assert any(".orphan-" in name for name in _files(store))  # the old WAL was set aside, not replayed
    assert RunStore(store.directory).check(thorough=True) is None
    keeper.close()


def test_a_store_replaced_by_a_foreign_database_is_reported_not_moved(store):
    store.list_runs()
    store.path.unlink()
    with sqlite3.connect(store.path) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    with pytest.raises(StoreError) as err:
        store.list_runs()
    assert err.value.kind == "foreign" and not err.value.can_move_aside
    with pytest.raises(StoreError):
        store.quarantine()
    assert store.path.exists()


def test_two_servers_stay_consistent_when_one_moves_a_damaged_store_aside(store, trained):
    a, b = RunStore(store.directory), RunStore(store.directory)
    assert len(a.list_runs()) == len(b.list_runs()) == 1
    store.path.write_bytes(os.urandom(8192))  # damaged while both run
    with pytest.raises(StoreError) as err_a:
        a.list_runs()
    with pytest.raises(StoreError) as err_b:
        b.list_runs()
    assert err_a.value.can_move_aside and err_b.value.can_move_aside
    moved = b.quarantine()
    assert moved is not None and ".corrupt-" in moved.name
    key = _save_another(b, trained)  # server B starts a fresh store and saves into it
    assert [r.key for r in a.list_runs()] == [key]  # server A notices the new file, no stale handle
    with pytest.raises(StoreError) as err:
        a.quarantine()  # A's button from the old error: the new file is healthy, nothing is moved
    assert err.value.kind == "refused" and [r.key for r in b.list_runs()] == [key]


def test_kinds_are_a_closed_set():
    assert set(typing.get_args(StoreErrorKind)) >= {"corrupt", "busy", "readonly", "full", "missing", "invalid_import"}
    assert [k for k in typing.get_args(StoreErrorKind) if StoreError("x", k).can_move_aside] == ["corrupt"]
