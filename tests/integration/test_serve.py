"""``serve`` under concurrent clients: the handler keeps one connection, so requests must be applied
one at a time, as in a Lambda container; none may report success for rows it did not write."""

from __future__ import annotations

import json
import sqlite3
import threading
import urllib.request
import uuid
from pathlib import Path

from tests.support import authorization, running_serve


def _post(base: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        f"{base}/api/data",
        data=json.dumps(body).encode(),
        headers={"Authorization": authorization("U1") or "", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, json.loads(response.read())


def test_concurrent_uploads_are_all_applied(tmp_path: Path) -> None:
    with running_serve(tmp_path) as (base, database):
        # Given 16 clients, each uploading one list and 50 todos in one transaction, at the same time
        bodies = []
        for client in range(16):
            list_id = str(uuid.uuid4())
            crud = [{"op": "PUT", "table": "lists", "id": list_id, "op_data": {"name": f"list {client}"}}]
            crud += [
                {
                    "op": "PUT",
                    "table": "todos",
                    "id": str(uuid.uuid4()),
                    "op_data": {"list_id": list_id, "description": f"todo {i}"},
                }
                for i in range(50)
            ]
            bodies.append({"transactions": [{"transaction_id": client, "crud": crud}]})
        answers: list[tuple[int, dict[str, object]]] = []
        threads = [threading.Thread(target=lambda b=b: answers.append(_post(base, b))) for b in bodies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        # Then every request succeeded and every row is there
        assert len(answers) == 16
        assert all(status == 200 and body["results"] == [{"status": "success"}] for status, body in answers)
        with sqlite3.connect(database) as conn:
            assert conn.execute("SELECT COUNT(*) FROM lists").fetchone()[0] == 16
            assert conn.execute("SELECT COUNT(*) FROM todos").fetchone()[0] == 16 * 50


def test_concurrent_puts_of_one_new_id_all_succeed(tmp_path: Path) -> None:
    with running_serve(tmp_path) as (base, database):
        for _round in range(3):
            # Given 20 clients that PUT the same new list at the same time
            list_id = str(uuid.uuid4())
            body = {"batch": [{"op": "PUT", "type": "lists", "id": list_id, "tx_id": 1, "data": {"name": list_id}}]}
            answers: list[tuple[int, dict[str, object]]] = []
            threads = [threading.Thread(target=lambda a=answers, b=body: a.append(_post(base, b))) for _ in range(20)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            # Then all succeed and there is one row
            assert [a[1]["results"] for a in answers] == [[{"status": "success"}]] * 20
            with sqlite3.connect(database) as conn:
                assert conn.execute("SELECT COUNT(*) FROM lists WHERE id = ?", (list_id,)).fetchone()[0] == 1


def test_forty_parallel_clients_are_all_answered(tmp_path: Path) -> None:
    with running_serve(tmp_path) as (base, database):
        # Given 40 clients that each send 5 uploads of one new list, all at once
        def client(number: int, answers: list[int]) -> None:
            for request in range(5):
                body = {
                    "batch": [
                        {"op": "PUT", "type": "lists", "id": str(uuid.uuid4()), "data": {"name": f"{number}/{request}"}}
                    ]
                }
                status, _ = _post(base, body)
                answers.append(status)

        answers: list[int] = []
        threads = [threading.Thread(target=client, args=(n, answers)) for n in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        # Then every one of the 200 requests was answered 200 (none reset) and every row is there
        assert answers == [200] * 200
        with sqlite3.connect(database) as conn:
            assert conn.execute("SELECT COUNT(*) FROM lists").fetchone()[0] == 200


def test_a_body_announced_over_the_lambda_limit_is_413_before_it_is_read(tmp_path: Path) -> None:
    import socket
    from urllib.parse import urlsplit

    with running_serve(tmp_path) as (base, _database):
        # Given a request that announces a body of a terabyte and sends two bytes
        address = urlsplit(base)
        with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
            sock.sendall(
                b"POST /api/data HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 999999999999\r\n\r\n{}"
            )
            # Then serve answers 413 at once instead of trying to read (or hold) it
            reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.0 413") or reply.startswith(b"HTTP/1.1 413")


def test_one_connection_carries_several_requests_until_the_client_closes_it(tmp_path: Path) -> None:
    import http.client
    from urllib.parse import urlsplit

    with running_serve(tmp_path) as (base, database):
        # Given one HTTP/1.1 connection to serve
        address = urlsplit(base)
        connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=60)
        headers = {"Authorization": authorization("U1") or "", "Content-Type": "application/json"}
        try:
            # When three uploads and a health check are sent one after another on it
            answers = []
            for number in range(3):
                body = {
                    "transactions": [
                        {
                            "crud": [
                                {
                                    "op": "PUT",
                                    "table": "lists",
                                    "id": str(uuid.uuid4()),
                                    "op_data": {"name": f"list {number}"},
                                }
                            ]
                        }
                    ]
                }
                connection.request("POST", "/api/data", json.dumps(body), headers)
                socket_used = connection.sock
                response = connection.getresponse()
                answers.append((response.version, response.status, json.loads(response.read()), response.will_close))
                # Then the same TCP connection stays open for the next request
                assert connection.sock is socket_used is not None
            connection.request("GET", "/health", headers={"Connection": "close"})
            health = connection.getresponse()
            health.read()
        finally:
            connection.close()

        # Then every upload was answered with HTTP/1.1 on the kept connection and applied
        assert answers == [(11, 200, {"results": [{"status": "success"}]}, False)] * 3
        # And a request saying "Connection: close" is answered and then closed
        assert health.status == 200 and health.will_close
        with sqlite3.connect(database) as conn:
            assert conn.execute("SELECT COUNT(*) FROM lists").fetchone()[0] == 3
