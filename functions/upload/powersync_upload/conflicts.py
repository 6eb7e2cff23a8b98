"""Conflict detection, deltas and business rules: the pure core (DESIGN.md section 3, "Conflicts")."""

from __future__ import annotations

TABLE = "powersync_upload_conflicts"
"""The conflicts table (``db/migrations/<dialect>/003_powersync_upload_conflicts.sql``), synced to the user."""
