"""Simulated devices: random client transactions over the demo tables, and the model that predicts them.

A :class:`Generator` makes one device's transactions (PowerSync ``CrudEntry`` JSON, shape B): lists and
todos the device owns alone (PUT, PATCH, DELETE, parents before children, a todo sometimes pointing at
a list the device deleted), PATCHes of shared counters (``chaos_counters``: ``total`` is a ``deltas``
column, so each PATCH carries ``old``; ``label`` is last write wins), PATCHes of shared documents
under conflict detection (``chaos_versioned``: ``detect: version``, ``on_conflict: skip``; ``chaos_notes``:
``detect: previous_values`` and ``rules.transitions`` on ``status``, ``on_conflict: reject``), one
``chaos_journal`` PUT per transaction, and now and then a bad value. :class:`OwnModel` applies a
device's transactions in its own order (the order its rows see them: a device sends one request at a
time) and says which must be fatal and why, from the rules of DESIGN.md section 3; :class:`SharedModel`
replays the committed transactions in commit order over the shared rows.
"""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

COUNTERS = tuple(f"counter-{n}" for n in range(4))
"""The shared counter rows every device PATCHes."""

COUNTER_SEED = 1000
"""Each counter's ``total`` before the campaign."""

BAD_RATE = 0.04
"""Share of operations that carry a bad value (each makes its whole transaction fatal)."""

VERSIONED = tuple(f"versioned-{n}" for n in range(3))
"""Shared ``chaos_versioned`` rows (``detect: version``, ``skip``), each seeded at version 1."""
NOTES = tuple(f"note-{n}" for n in range(3))
"""Shared ``chaos_notes`` rows (``detect: previous_values``, status transitions, ``reject``), seeded
with title ``"seed"`` and status ``draft``."""
TRANSITIONS = {"draft": ["review"], "review": ["draft", "published"], "published": ["draft"]}
"""``chaos_notes``' ``rules.transitions`` on ``status`` (as in the campaign's ``upload.yaml``)."""

Peek = Callable[[str, str], Any]
"""(table, row id) -> the row's current value as the device last synced it: ``chaos_versioned``'s
version, ``chaos_notes``' title. The campaign reads the database (a device's sync)."""


@dataclass
class Tx:
    """One client transaction of one device.

    Attributes:
        device: the device's number.
        number: the transaction's number on that device (its ``tx_id``).
        entries: the CrudEntry JSON objects, ``op_id`` set.
        journal_id: the id of its ``chaos_journal`` row.
        counters: (counter id, delta or None, label or None) per counter PATCH, in queue order.
        bad: the error codes its bad values may be answered with (empty: none planted).
        referenced: lists its todo PUTs name (the generator puts no such list after them).
    """

    device: int
    number: int
    entries: list[dict[str, Any]]
    journal_id: str
    counters: list[tuple[str, int | None, str | None]] = field(default_factory=list)
    bad: set[str] = field(default_factory=set)
    referenced: set[str] = field(default_factory=set)
    shared: list[tuple[str, str, Any, dict[str, Any]]] = field(default_factory=list)
    """(table, row id, the value the device saw, data) of its ``chaos_versioned``/``chaos_notes``
    PATCHes, in queue order."""
    maybe: set[str] = field(default_factory=set)
    """Codes it may be rejected with depending on other devices (``CONFLICT``), beside :attr:`bad`."""

    @property
    def first_op_id(self) -> int:
        """``op_id`` of its first entry."""
        return int(self.entries[0]["op_id"])

    @property
    def last_op_id(self) -> int:
        """``op_id`` of its last entry."""
        return int(self.entries[-1]["op_id"])


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class Generator:
    """One device's random transactions, reproducible from ``seed`` and the device's number.

    Args:
        seed: the campaign's seed.
        device: the device's number.
        user_id: the device's user (the JWT ``sub``; owner of its lists, todos and journal rows).
    """

    def __init__(self, seed: int, device: int, user_id: str, peek: Peek | None = None) -> None:
        self.rng = random.Random(f"{seed}/generate/{device}")
        self.device = device
        self.user_id = user_id
        self.peek = peek
        self.lists: list[str] = []
        self.todos: list[str] = []
        self.op_id = 0
        self.number = 0
        self.renames = 0

    def next(self) -> Tx:
        """The device's next transaction (1 to 4 operations and its journal PUT)."""
        rng = self.rng
        self.number += 1
        journal_id = f"j-{self.device}-{self.number}"
        tx = Tx(self.device, self.number, [], journal_id)
        ops: list[dict[str, Any]] = []
        for _ in range(rng.randint(1, 4)):
            ops.extend(self._operation(tx))
        ops.insert(
            rng.randint(0, len(ops)),
            _entry("PUT", "chaos_journal", journal_id, {"device": self.device, "tx": self.number}),
        )
        for entry in ops:
            self.op_id += 1
            entry["op_id"] = self.op_id
            entry["tx_id"] = self.number
        tx.entries = ops
        return tx

    def _operation(self, tx: Tx) -> list[dict[str, Any]]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.15 or not self.lists:
            return [self._put_list(tx)]
        if roll < 0.20:
            list_id = rng.choice(self.lists)
            if rng.random() < 0.7:  # sometimes the device keeps a stale id: a later todo then names it
                self.lists.remove(list_id)
            return [_entry("DELETE", "lists", list_id)]
        if roll < 0.45:
            return [self._put_todo(tx)]
        if roll < 0.60 and self.todos:
            return [self._patch_todo(tx)]
        if roll < 0.65 and self.todos:
            return [_entry("DELETE", "todos", rng.choice(self.todos))]
        if roll < 0.75 and self.peek is not None:
            return [self._patch_shared(tx)]
        return [self._patch_counter(tx)]

    def _patch_shared(self, tx: Tx) -> dict[str, Any]:
        """A PATCH of a shared document with the value the device last saw: sometimes stale by the
        time it commits (another device got there first), sometimes stale already (an old sync)."""
        rng, peek = self.rng, self.peek
        assert peek is not None
        tag = f"d{self.device}t{self.number}s{len(tx.shared)}"
        if rng.random() < 0.5:
            row = rng.choice(VERSIONED)
            seen = int(peek("chaos_versioned", row)) - (1 if rng.random() < 0.15 else 0)
            data: dict[str, Any] = {"body": tag}
            tx.shared.append(("chaos_versioned", row, seen, data))
            return _entry("PATCH", "chaos_versioned", row, data, {"version": seen})
        row = rng.choice(NOTES)
        seen = peek("chaos_notes", row) if rng.random() < 0.85 else "an old title"
        data = {"title": tag}
        if rng.random() < 0.5:
            data["status"] = rng.choice(list(TRANSITIONS))
        tx.shared.append(("chaos_notes", row, seen, data))
        tx.maybe.add("CONFLICT")
        return _entry("PATCH", "chaos_notes", row, data, {"title": seen})

    def _put_list(self, tx: Tx) -> dict[str, Any]:
        rng = self.rng
        reusable = [x for x in self.lists if x not in tx.referenced]
        if reusable and rng.random() < 0.3:
            list_id = rng.choice(reusable)
        else:
            list_id = _uuid(rng)
            self.lists.append(list_id)
        self.renames += 1
        name: str | None = f"{list_id[:8]} r{self.renames}"  # unique per owner: it starts with the id
        if rng.random() < BAD_RATE:
            name = None
            tx.bad |= {"NOT_NULL_VIOLATION", "INVALID_DATA"}
        return _entry("PUT", "lists", list_id, {"name": name})

    def _put_todo(self, tx: Tx) -> dict[str, Any]:
        rng = self.rng
        todo_id = rng.choice(self.todos) if self.todos and rng.random() < 0.3 else _uuid(rng)
        if todo_id not in self.todos:
            self.todos.append(todo_id)
        list_id = rng.choice(self.lists)
        tx.referenced.add(list_id)  # no later PUT of it in this transaction: the app writes parents first
        data: dict[str, Any] = {
            "list_id": list_id,
            "description": f"todo {rng.randrange(10**6)}",
            "completed": rng.randint(0, 1),
            "priority": rng.choice([None, rng.randint(1, 5)]),
            "amount": rng.choice([None, rng.randrange(100000) / 100]),
        }
        if rng.random() < BAD_RATE:
            data["priority"] = "high"
            tx.bad.add("INVALID_DATA")
        return _entry("PUT", "todos", todo_id, data)

    def _patch_todo(self, tx: Tx) -> dict[str, Any]:
        rng = self.rng
        data: dict[str, Any] = {}
        for column in rng.sample(["description", "completed", "priority"], rng.randint(1, 3)):
            if column == "description":
                data[column] = f"edited {rng.randrange(10**6)}"
            elif column == "completed":
                data[column] = rng.randint(0, 1)
            else:
                data[column] = rng.choice([None, rng.randint(1, 5)])
        if rng.random() < BAD_RATE:
            data["priority"] = "high"
            tx.bad.add("INVALID_DATA")
        return _entry("PATCH", "todos", rng.choice(self.todos), data)

    def _patch_counter(self, tx: Tx) -> dict[str, Any]:
        rng = self.rng
        counter = rng.choice(COUNTERS)
        if any(c == counter for c, _, _ in tx.counters):  # one PATCH per counter and transaction
            return self._put_list(tx)
        label = f"d{self.device}t{self.number}" if rng.random() < 0.5 else None
        delta = rng.choice([-3, -2, -1, 1, 2, 3, 5, 8])
        seen = rng.randint(0, 500)  # the device's last synced value: any, only new - old counts
        data: dict[str, Any] = {"total": seen + delta}
        old: dict[str, Any] | None = {"total": seen}
        if label is not None:
            data["label"] = label
        if rng.random() < BAD_RATE:
            old = None  # a delta without its previous value
            tx.bad.add("INVALID_DATA")
        tx.counters.append((counter, delta, label))
        return _entry("PATCH", "chaos_counters", counter, data, old)


def _entry(
    op: str, table: str, row_id: str, data: dict[str, Any] | None = None, old: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"op": op, "type": table, "id": row_id}
    if data is not None:
        out["data"] = data
    if old is not None:
        out["old"] = old
    return out


@dataclass
class OwnState:
    """A device's own rows: lists (id -> name), todos (id -> columns), journal ids."""

    lists: dict[str, str] = field(default_factory=dict)
    todos: dict[str, dict[str, Any]] = field(default_factory=dict)
    journal: set[str] = field(default_factory=set)


class OwnModel:
    """A device's own rows, applying its transactions one at a time in its queue order."""

    def __init__(self) -> None:
        self.state = OwnState()

    def predict(self, tx: Tx) -> tuple[bool, set[str]]:
        """Whether ``tx`` must commit, and when not, the codes that explain it (nothing is applied)."""
        codes = set(tx.bad)
        if self._applied(tx) is None:
            codes.add("FOREIGN_KEY_VIOLATION")
        return not codes, codes

    def apply(self, tx: Tx) -> None:
        """Apply a committed ``tx`` (one the server committed, whatever :meth:`predict` said)."""
        trial = self._applied(tx, check=False)
        assert trial is not None
        self.state = trial

    def _applied(self, tx: Tx, *, check: bool = True) -> OwnState | None:
        state = copy.deepcopy(self.state)
        for entry in tx.entries:
            table, row_id, data = entry["type"], entry["id"], entry.get("data") or {}
            if table == "lists":
                if entry["op"] == "PUT":
                    state.lists[row_id] = data["name"]
                else:
                    state.lists.pop(row_id, None)
                    state.todos = {k: v for k, v in state.todos.items() if v["list_id"] != row_id}  # ON DELETE CASCADE
            elif table == "todos":
                if entry["op"] == "PUT":
                    if check and data["list_id"] not in state.lists:
                        return None  # a write naming a missing parent fails, even if the row goes later
                    state.todos[row_id] = {**data, "amount": _cents(data["amount"])}
                elif entry["op"] == "PATCH":
                    if row_id in state.todos:  # a missing row: ROW_NOT_FOUND, nothing created
                        state.todos[row_id].update(data)
                else:
                    state.todos.pop(row_id, None)
            elif table == "chaos_journal":
                state.journal.add(row_id)
        if check and any(t["list_id"] not in state.lists for t in state.todos.values()):
            return None
        return state


def _cents(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value)).quantize(Decimal("0.01"))


def normalize_todo(row: dict[str, Any]) -> dict[str, Any]:
    """A todo as read back, in the model's form (lower-case UUID, 0/1, int or None, cents)."""
    return {
        "list_id": str(row["list_id"]).lower(),
        "description": row["description"],
        "completed": int(bool(int(row["completed"]))),
        "priority": None if row["priority"] is None else int(row["priority"]),
        "amount": _cents(row["amount"]),
    }


@dataclass
class SharedModel:
    """The shared documents, replaying committed transactions in commit order (the ledger's ``seq``).

    Attributes:
        versioned: row -> (version, body).
        notes: row -> (title, status).
    """

    versioned: dict[str, tuple[int, str | None]] = field(default_factory=lambda: dict.fromkeys(VERSIONED, (1, None)))
    notes: dict[str, tuple[str, str]] = field(default_factory=lambda: dict.fromkeys(NOTES, ("seed", "draft")))

    def apply(self, tx: Tx) -> tuple[list[str], int]:
        """Apply a committed ``tx``; returns what contradicts the rules (a conflict that committed) and
        how many ``chaos_versioned`` PATCHes had to be skipped (their version was stale)."""
        wrong: list[str] = []
        skipped = 0
        for table, row, seen, data in tx.shared:
            if table == "chaos_versioned":
                version, _body = self.versioned[row]
                if version != seen:  # on_conflict: skip: only that operation is dropped
                    skipped += 1
                    continue
                self.versioned[row] = (version + 1, data["body"])
                continue
            title, status = self.notes[row]
            new_status = data.get("status", status)
            if title not in (seen, data["title"]):
                wrong.append(f"{row}: committed with a stale title (server {title!r})")
            if new_status != status and new_status not in TRANSITIONS[status]:
                wrong.append(f"{row}: committed a refused transition {status} -> {new_status}")
            self.notes[row] = (data["title"], new_status)
        return wrong, skipped
