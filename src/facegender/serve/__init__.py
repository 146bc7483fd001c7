"""The HTTP service (FastAPI on uvicorn); needs the ``serve`` extra (``facegender[serve]``)."""

from facegender.serve.app import create_app

__all__ = ["create_app"]
