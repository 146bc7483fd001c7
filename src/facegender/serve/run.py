"""Start the service on uvicorn; each worker process builds its app (and loads the model) once."""

from __future__ import annotations

import os
from pathlib import Path

from facegender.model_ref import ModelRef, resolve_model


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    model: str | Path | ModelRef | None = None,
    workers: int = 1,
    max_bytes: int | None = None,
    concurrency: int | None = None,
    threads: int | None = None,
    log_level: str = "info",
) -> None:
    import uvicorn

    # Worker processes get their settings from the environment: uvicorn imports the factory anew.
    settings = {
        "FACEGENDER_MODEL": resolve_model(model).spec,
        "FACEGENDER_MAX_BYTES": max_bytes,
        "FACEGENDER_CONCURRENCY": concurrency,
        "FACEGENDER_THREADS": threads,
        "FACEGENDER_PROCESSES": max(1, int(workers)),  # they share the cores (facegender.cpu)
    }
    for key, value in settings.items():
        if value is not None:
            os.environ[key] = str(value)
    uvicorn.run(
        "facegender.serve.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=max(1, int(workers)),
        log_level=log_level,
        timeout_graceful_shutdown=10,
    )
