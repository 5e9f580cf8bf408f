"""Entry point for ``celery -A worker.celery_app`` (Flower, ``inspect``).

Only the Celery command line imports this module; building the app reads settings
and connects to nothing. Workers run as ``audiences worker``, which consumes through the
transport that survives malformed messages (``worker/transport.py``).
"""

from worker.app import create_app

app = create_app(consumer=False)
