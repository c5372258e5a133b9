"""The Celery side of the comparison: the same task functions, Redis as broker and result backend.

Started by bench/benchkit.py as ``celery -A celery_app worker --pool prefork -c N`` with
BENCH_REDIS_URL set; default Celery settings otherwise (what a team gets out of the box).
"""

from __future__ import annotations

import os

import bench_tasks
from celery import Celery

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")

app = Celery("hive_bench", broker=f"{URL}/0", backend=f"{URL}/1")
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task(name="echo")
def echo(params):
    return bench_tasks.echo(**params)["data"]


@app.task(name="hash_work")
def hash_work(rounds):
    return bench_tasks.hash_work(rounds)["data"]


@app.task(name="sleep")
def sleep(seconds):
    return bench_tasks.sleep(seconds)["data"]
