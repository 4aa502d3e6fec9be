"""Airflow DAG: one daily `geoseg monitor run` (thin: all logic lives in geoseg/; see docs/monitor.md).

Exit code 75 means another run holds every AOI's lock (only some: exit 0 with a warning); Airflow retries
the task later.
"""

from __future__ import annotations

import datetime as dt

from airflow import DAG
from airflow.operators.bash import BashOperator

GEOSEG = "/opt/geoseg"

with DAG(
    dag_id="geoseg_monitor",
    schedule="17 3 * * *",
    start_date=dt.datetime(2024, 1, 1),
    catchup=False,  # each run processes every scene not yet processed, so catch-up runs are not needed
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": dt.timedelta(minutes=30)},
) as dag:
    BashOperator(
        task_id="monitor_run",
        bash_command=f"cd {GEOSEG} && .venv/bin/geoseg monitor run workflows/monitor/monitor.yaml "
                     "-o /var/lib/geoseg-monitor",
    )
