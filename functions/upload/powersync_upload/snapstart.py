"""Lambda SnapStart runtime hooks: what a snapshot may keep, and what each restored copy makes anew.

With the template's ``SnapStart`` parameter on, Lambda runs the init phase once when a version is
published, snapshots the memory, and starts every execution environment of that version from the
snapshot. What init leaves in memory is therefore shared by every restored copy, and what it opened
is stale after a restore. This module registers two hooks with ``snapshot_restore_py`` (which the
Lambda Python runtime provides; from PyPI for the tests):

* before the snapshot: build the runtime (settings and configuration, validated: a broken file fails
  the publish, not the first request) and make sure no database connection exists, so none is frozen
  into the snapshot (connections are only ever opened by a request: ``Runtime.db``);
* after each restore: drop anything connection-bound or meant to be unique per environment: the
  database object (its connection), the cached JWKS clients (keys fetched before the snapshot, and
  their HTTP state) and the state of ``random`` (the retry jitter would otherwise be the same
  sequence in every copy). UUIDs come from ``os.urandom`` and need nothing. A database secret cached
  before the snapshot is still fetched again after a login failure (rotation), as always.

Without the module (local runs, ``serve``), :func:`register` does nothing.
"""

from __future__ import annotations

import importlib
import random
from typing import Any

from . import auth, handler

HOOKS_MODULE = "snapshot_restore_py"


def before_snapshot() -> None:
    """Load and validate the settings and the configuration; hold no database connection."""
    rt = handler.runtime()
    _drop_database(rt)


def after_restore() -> None:
    """Make this restored environment's own: no inherited database object, fresh randomness."""
    rt = handler.current_runtime()
    if rt is not None:
        _drop_database(rt)
    auth.forget_keys()
    random.seed()


def _drop_database(rt: handler.Runtime) -> None:
    db = rt.reset_database()
    if db is not None:
        db.discard()


def register(hooks: Any = None) -> bool:
    """Register :func:`before_snapshot` and :func:`after_restore` with the runtime's hooks module.

    Args:
        hooks: the ``snapshot_restore_py`` module (tests pass it); imported when ``None``.

    Returns:
        whether the hooks were registered (``False`` when the module is not installed).
    """
    if hooks is None:
        try:
            hooks = importlib.import_module(HOOKS_MODULE)
        except ImportError:
            return False
    hooks.register_before_snapshot(before_snapshot)
    hooks.register_after_restore(after_restore)
    return True
