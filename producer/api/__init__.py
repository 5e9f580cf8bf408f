"""The HTTP API: translates HTTP to producer and store calls, and errors to the envelope."""

from producer.api.app import create_api

__all__ = ["create_api"]
