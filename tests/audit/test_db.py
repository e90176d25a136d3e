"""audit/db.py: prepared statements alone or several per round trip, errors as Django's."""

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from audit.db import execute_pipeline, execute_prepared

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture
def table():
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE db_test (id int PRIMARY KEY, v text)")
    yield "db_test"


def test_a_pipeline_returns_each_statements_rows_in_order_and_logs_one_trip(table):
    with CaptureQueriesContext(connection) as queries:
        results = execute_pipeline(
            connection,
            [
                ("INSERT INTO db_test (id, v) VALUES (%s, %s)", [1, "a"]),
                ("INSERT INTO db_test (id, v) VALUES (%s, %s) RETURNING id", [2, "b"]),
                ("UPDATE db_test SET v = %s WHERE id = %s", ["c", 1]),
                ("SELECT id, v FROM db_test ORDER BY id", []),
            ],
        )
    # A later statement sees what an earlier one wrote; a statement without rows gives [].
    assert results == [[], [(2,)], [], [(1, "c"), (2, "b")]]
    assert len(queries) == 1
    assert queries[0]["sql"].count(";\n") == 3
    assert execute_prepared(connection, "SELECT count(*) FROM db_test", []) == [(2,)]


def test_the_first_error_stops_the_rest_and_is_raised_as_djangos(table):
    execute_prepared(connection, "INSERT INTO db_test (id, v) VALUES (%s, %s)", [1, "a"])
    with pytest.raises(IntegrityError), transaction.atomic():
        execute_pipeline(
            connection,
            [
                ("INSERT INTO db_test (id, v) VALUES (%s, %s)", [2, "b"]),
                ("INSERT INTO db_test (id, v) VALUES (%s, %s)", [1, "duplicate"]),
                ("INSERT INTO db_test (id, v) VALUES (%s, %s)", [3, "c"]),
            ],
        )
    # The block rolled back: nothing of the failed trip stays, the connection is usable.
    assert execute_prepared(connection, "SELECT id FROM db_test ORDER BY id", []) == [(1,)]


@pytest.mark.django_db(transaction=True)
def test_cursors_are_kept_per_connection_and_replaced_after_a_reconnect():
    first = execute_prepared(connection, "SELECT pg_backend_pid()", [])
    kept = connection._prepared_cursors[1][0]
    assert execute_prepared(connection, "SELECT 2", []) == [(2,)]
    assert connection._prepared_cursors[1][0] is kept
    connection.close()
    # A new server connection: the old cursors belonged to the closed one.
    second = execute_prepared(connection, "SELECT pg_backend_pid()", [])
    assert second != first
    assert connection._prepared_cursors[1][0] is not kept
    assert execute_pipeline(connection, [("SELECT 1", []), ("SELECT 2", [])]) == [[(1,)], [(2,)]]
