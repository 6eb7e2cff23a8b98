"""SnapStart hooks (``powersync_upload.snapstart``) registered with the real ``snapshot_restore_py``
package and run the way the Lambda runtime runs them (its registries, in order): before the snapshot
nothing holds a database connection and the configuration is loaded; after a restore the database,
the JWKS caches and the random state are the environment's own. A SQLite file stands in for the
database, so a connection is real."""

from __future__ import annotations

import importlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import snapshot_restore_py

from powersync_upload import auth, handler, snapstart
from tests.support import demo_sqlite


@pytest.fixture
def hooks() -> Iterator[Any]:
    """A fresh copy of the runtime's hooks module (its registries are module globals)."""
    module = importlib.reload(snapshot_restore_py)
    yield module
    importlib.reload(snapshot_restore_py)


def _run(registry: list[tuple[Any, tuple[Any, ...], dict[str, Any]]]) -> None:
    """What the Lambda runtime does with a registry: call each hook with its arguments, in order."""
    for func, args, kwargs in registry:
        func(*args, **kwargs)


def test_the_hooks_register_with_the_runtimes_module(hooks: Any) -> None:
    # When the entry module registers them
    assert snapstart.register(hooks) is True
    # Then there is one before-snapshot and one after-restore hook, ours
    assert [f for f, _, _ in hooks.get_before_snapshot()] == [snapstart.before_snapshot]
    assert [f for f, _, _ in hooks.get_after_restore()] == [snapstart.after_restore]


def test_before_the_snapshot_the_configuration_is_loaded_and_no_connection_is_held(hooks: Any, tmp_path: Path) -> None:
    # Given a container whose init ran a request (a connection to the database is open)
    with demo_sqlite(tmp_path) as (_, rt):
        db = rt.db
        db.connection(5.0)
        assert db._conn is not None
        snapstart.register(hooks)
        # When Lambda takes the snapshot
        _run(hooks.get_before_snapshot())
        # Then the runtime (settings, configuration) is built and holds no database, and the
        # connection it had is closed
        assert handler.current_runtime() is rt
        assert rt._db is None
        assert db._conn is None


def test_after_a_restore_nothing_connection_bound_or_shared_is_kept(hooks: Any, tmp_path: Path) -> None:
    # Given a snapshot taken while a database object, a JWKS client and a random state existed
    with demo_sqlite(tmp_path) as (_, rt):
        db = rt.db
        db.connection(5.0)
        auth._jwks_client("https://issuer.example/.well-known/jwks.json")
        random.seed(1234)
        expected_if_shared = random.random()
        random.seed(1234)
        snapstart.register(hooks)
        # When Lambda restores an environment from it
        _run(hooks.get_after_restore())
        # Then the database object and its connection are gone (the next request opens its own),
        # the JWKS clients are fetched anew, and the random sequence is not the snapshot's
        assert rt._db is None and db._conn is None
        assert auth._jwks_client.cache_info().currsize == 0
        assert random.random() != expected_if_shared
        # And the next request gets a working database again
        assert rt.db is not db
        rt.db.connection(5.0)


def test_without_the_runtimes_module_nothing_is_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given no snapshot_restore_py (local runs, serve)
    monkeypatch.setattr(snapstart, "HOOKS_MODULE", "no_such_module_for_snapstart")
    # When / Then registering does nothing, without failing
    assert snapstart.register() is False


def test_the_init_phase_loads_the_configuration_and_opens_no_database_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hooks: Any
) -> None:
    # Given a deployed function's environment naming a database (SnapStart snapshots what init leaves)
    with demo_sqlite(tmp_path) as (url, _):
        handler.set_runtime(None)
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("AUTH_MODE", "handler")
        monkeypatch.setenv("JWT_SECRET", "init-test-secret-init-test-secret-0123")
        monkeypatch.setattr(snapstart, "HOOKS_MODULE", hooks.__name__)
        # When Lambda's init imports the entry module
        import app

        importlib.reload(app)
        # Then the runtime (settings, configuration) is built, no database object exists yet, and the
        # SnapStart hooks are registered with the runtime's module
        rt = handler.current_runtime()
        assert rt is not None and rt._db is None
        assert snapstart.before_snapshot in [f for f, _, _ in hooks.get_before_snapshot()]
