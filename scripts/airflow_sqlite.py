"""Connect arguments for the local Airflow's SQLite metadata database (``make run``, ``make airflow``, tests).

``airflow standalone`` runs the api-server, scheduler, dag-processor and triggerer on one SQLite file,
and a write waits for the others' write transactions to end. sqlite3's default wait, 5 s, is too short
on a loaded 2-core machine: a run triggered through the REST API then fails with "database is locked"
(HTTP 500). Production uses Postgres (docker-compose.yaml), where this does not apply.
"""

CONNECT_ARGS = {"timeout": 60}
