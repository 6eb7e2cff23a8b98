"""The planner (DESIGN.md section 3, "Order inside a transaction", group commit), without a database."""

from __future__ import annotations

from powersync_upload.grouping import groups
from powersync_upload.plan import Step, Tables, plan, transient_collision

TODO = Tables(parents={"todos": (("lists", "restrict"),)}, unique=frozenset({"lists"}))
CASCADE = Tables(parents={"todos": (("lists", "cascade"),)})
FOLDERS = Tables(parents={"folders": (("folders", "restrict"),)})


def put_list(tx: int, row: str, index: int = 0) -> Step:
    return Step(tx, index, "lists", "PUT", row, ("name",), sets_unique=True)


def put_todo(tx: int, row: str, parent: str, index: int = 0) -> Step:
    return Step(tx, index, "todos", "PUT", row, ("list_id", "description"), refs=(("lists", parent),))


def order(steps: list[Step], tables: Tables) -> list[tuple[str, str, list[str]]]:
    return [(b.table, b.kind, [str(steps[i].row) for i in b.steps]) for b in plan(steps, tables).batches]


def test_interleaved_cycles_become_one_batch_per_table_and_kind() -> None:
    # Given 3 cycles of [PUT list, PUT todo, PATCH todo, PATCH list, DELETE todo] in one transaction
    steps = []
    for i in range(3):
        steps += [
            put_list(0, f"l{i}"),
            put_todo(0, f"t{i}", f"l{i}"),
            Step(0, 0, "todos", "PATCH", f"t{i}", ("completed",)),
            Step(0, 0, "lists", "PATCH", f"l{i}", ("name",), sets_unique=True),
            Step(0, 0, "todos", "DELETE", f"t{i}"),
        ]
    # When planned / Then five batches: lists before todos, each row's operations in queue order
    assert order(steps, TODO) == [
        ("lists", "PUT", ["l0", "l1", "l2"]),
        ("lists", "PATCH", ["l0", "l1", "l2"]),
        ("todos", "PUT", ["t0", "t1", "t2"]),
        ("todos", "PATCH", ["t0", "t1", "t2"]),
        ("todos", "DELETE", ["t0", "t1", "t2"]),
    ]


def test_a_child_sent_before_its_parent_is_written_after_it() -> None:
    # Given a todo PUT before the PUT of its list, in one transaction
    steps = [put_todo(0, "t", "l"), put_list(0, "l", 1)]
    # Then the list is written first
    assert order(steps, TODO) == [("lists", "PUT", ["l"]), ("todos", "PUT", ["t"])]


def test_children_are_deleted_before_their_parent() -> None:
    # Given a list deleted before its todos (NO ACTION foreign key)
    steps = [Step(0, 0, "lists", "DELETE", "l"), Step(0, 1, "todos", "DELETE", "a"), Step(0, 2, "todos", "DELETE", "b")]
    # Then the todos go first, in one statement
    assert order(steps, TODO) == [("todos", "DELETE", ["a", "b"]), ("lists", "DELETE", ["l"])]


def test_a_cascading_parent_delete_keeps_queue_order_with_child_writes() -> None:
    # Given a list deleted, then a todo written into it, with ON DELETE CASCADE
    steps = [Step(0, 0, "lists", "DELETE", "l"), put_todo(0, "t", "l", 1)]
    # Then the delete runs first (so the todo's foreign key fails, as in queue order)
    assert order(steps, CASCADE) == [("lists", "DELETE", ["l"]), ("todos", "PUT", ["t"])]


def test_self_referencing_rows_are_ordered_row_by_row() -> None:
    # Given a child folder written before its parent, both referencing upwards
    put = [
        Step(0, 0, "folders", "PUT", "f2", ("parent_id",), refs=(("folders", "f3"),)),
        Step(0, 1, "folders", "PUT", "f3", ("parent_id",), refs=(("folders", "f1"),)),
    ]
    # Then the parent is written first, in its own statement (MySQL checks row by row)
    assert order(put, FOLDERS) == [("folders", "PUT", ["f3"]), ("folders", "PUT", ["f2"])]
    # Given the tree deleted root first, each row's current parent known
    delete = [
        Step(0, 0, "folders", "DELETE", "f1"),
        Step(0, 1, "folders", "DELETE", "f3", current_parent="f1"),
        Step(0, 2, "folders", "DELETE", "f2", current_parent="f3"),
    ]
    # Then the leaves go first
    assert order(delete, FOLDERS) == [
        ("folders", "DELETE", ["f2"]),
        ("folders", "DELETE", ["f3"]),
        ("folders", "DELETE", ["f1"]),
    ]


def test_a_later_transaction_never_rescues_an_earlier_one() -> None:
    # Given a todo in transaction 0 whose list only transaction 1 creates
    steps = [put_todo(0, "t", "l"), put_list(1, "l")]
    # Then they may share a group, but the todo is written first (its foreign key then fails)
    assert groups([[steps[0]], [steps[1]]], TODO) == [range(0, 2)]
    assert order(steps, TODO) == [("todos", "PUT", ["t"]), ("lists", "PUT", ["l"])]


def test_the_same_row_in_two_transactions_keeps_transaction_order() -> None:
    steps = [Step(0, 0, "lists", "PATCH", "l", ("name",)), Step(1, 0, "lists", "PATCH", "l", ("name",))]
    assert [b.steps for b in plan(steps, Tables()).batches] == [(0,), (1,)]


def test_single_put_transactions_share_one_speculative_batch() -> None:
    # Given 100 transactions of one PUT each on a table with a unique index
    steps = [put_list(tx, f"l{tx}") for tx in range(100)]
    # Then one group, one batch, marked speculative (it holds only if every row is new)
    assert groups([[s] for s in steps], TODO) == [range(0, 100)]
    batches = plan(steps, TODO).batches
    assert len(batches) == 1
    assert batches[0].speculative
    assert batches[0].steps == tuple(range(100))


def test_a_batch_of_one_transaction_is_not_speculative() -> None:
    steps = [put_list(0, f"l{i}", i) for i in range(3)]
    assert not plan(steps, TODO).batches[0].speculative


def test_freeing_a_unique_value_of_an_existing_row_starts_a_new_group() -> None:
    # Given a PUT of a list, then a transaction renaming another, existing list (name is indexed)
    transactions = [[put_list(0, "new")], [Step(1, 0, "lists", "PATCH", "old", ("name",), sets_unique=True)]]
    # Then the rename is not grouped with the PUT (it could free the name the PUT needs)
    assert groups(transactions, TODO) == [range(0, 1), range(1, 2)]


def test_renaming_a_row_the_transaction_inserted_itself_keeps_the_group() -> None:
    transactions = [
        [put_list(0, "a")],
        [put_list(1, "b"), Step(1, 1, "lists", "PATCH", "b", ("name",), sets_unique=True)],
    ]
    assert groups(transactions, TODO) == [range(0, 2)]


def test_a_parent_delete_and_a_child_write_in_different_transactions_are_not_grouped() -> None:
    transactions = [[Step(0, 0, "lists", "DELETE", "l")], [put_todo(1, "t", "m")]]
    assert groups(transactions, TODO) == [range(0, 1), range(1, 2)]


def test_groups_end_at_the_step_limit() -> None:
    transactions = [[put_list(tx, f"l{tx}")] for tx in range(5)]
    assert groups(transactions, TODO, max_steps=2) == [range(0, 2), range(2, 4), range(4, 5)]


def test_new_rows_that_reference_each_other_fall_back_to_queue_order() -> None:
    # Given two new folders that reference each other
    steps = [
        Step(0, 0, "folders", "PUT", "a", ("parent_id",), refs=(("folders", "b"),)),
        Step(0, 1, "folders", "PUT", "b", ("parent_id",), refs=(("folders", "a"),)),
    ]
    # Then the plan is queue order, one step per batch (the foreign key decides)
    result = plan(steps, FOLDERS)
    assert not result.ordered
    assert result.sequence() == [0, 1]


def test_every_step_is_planned_exactly_once() -> None:
    steps = [put_list(0, "l"), put_todo(0, "t", "l", 1), Step(0, 2, "lists", "DELETE", "l")]
    assert sorted(plan(steps, TODO).sequence()) == [0, 1, 2]


def test_a_swap_of_unique_values_between_two_rows_is_a_transient_collision() -> None:
    # Given A holds "x" and B holds "y", and the batch sets A to "y", then B to "x"
    transitions = [("A", {"name": "x"}, {"name": "y"}), ("B", {"name": "y"}, {"name": "x"})]
    # Then written one at a time in that order, A would meet B's "y": the batch must go row by row
    assert transient_collision(transitions, [("name",)])


def test_a_swap_through_a_temporary_value_is_a_collision_only_where_queue_order_meets_one() -> None:
    # Given A "x" -> "tmp" and B "y" -> "x": in order, A frees "x" before B takes it
    ordered = [("A", {"name": "x"}, {"name": "tmp"}), ("B", {"name": "y"}, {"name": "x"})]
    assert not transient_collision(ordered, [("name",)])
    # And the other order meets A still holding "x"
    assert transient_collision(list(reversed(ordered)), [("name",)])


def test_new_rows_with_distinct_values_and_nulls_never_collide() -> None:
    transitions = [("A", None, {"name": "a"}), ("B", None, {"name": None}), ("C", None, {"name": None})]
    assert not transient_collision(transitions, [("name",)])


def test_multi_column_indexes_compare_all_their_columns_case_insensitively() -> None:
    # Given (owner, name) unique, B taking A's name under another owner, then C taking it under A's owner
    transitions = [
        ("A", {"owner": "u1", "name": "Milk"}, {"name": "milk"}),
        ("B", {"owner": "u2", "name": "b"}, {"name": "MILK"}),
    ]
    assert not transient_collision(transitions, [("owner", "name")])
    transitions.append(("C", {"owner": "u1", "name": "c"}, {"name": "mIlk"}))
    assert transient_collision(transitions, [("owner", "name")])
