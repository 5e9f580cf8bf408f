"""Entry point for ``celery -A worker.celery_app`` (the worker, Flower).

Only the Celery command line imports this module; building the app reads settings
and connects to nothing.
"""

from worker.app import create_app

app = create_app()
