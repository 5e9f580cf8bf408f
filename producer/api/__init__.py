"""The HTTP API: translates HTTP to producer and store calls, and errors to the envelope.

The app is built by :func:`producer.api.app.create_api`; this package imports nothing at
load, so the client can use :mod:`producer.api.schemas` without the server's stack.
"""
