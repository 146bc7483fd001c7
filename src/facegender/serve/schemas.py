"""The API's response bodies as pydantic models, so ``/openapi.json`` says what each answer holds
and a client can be generated from it. The fields are those of :meth:`ImageResult.to_dict`,
:func:`facegender.serve.model_info.model_summary` and the error object; ``tests/test_api.py``
checks them against the real answers and runs schemathesis on the whole schema."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from facegender.abstain import UNCERTAIN
from facegender.labels import LABELS
from facegender.predict import ERROR_CODES

Gender = Literal[(*LABELS, UNCERTAIN)]  # type: ignore[valid-type]  # uncertain: min_confidence
ErrorCode = Literal[ERROR_CODES]  # type: ignore[valid-type]


class FaceOut(BaseModel):
    box: list[int] = Field(min_length=4, max_length=4, description="[x, y, w, h] in pixels")
    score: float = Field(description="detector confidence")
    gender: Gender
    female_probability: float = Field(ge=0, le=1, description="calibrated P(female)")


class PredictionOut(BaseModel):
    """One image: what ``facegender predict --format json`` writes for it."""

    path: str | None
    status: Literal["ok", "no_face", "error"]
    error: str | None
    error_code: ErrorCode | None
    width: int | None
    height: int | None
    faces: list[FaceOut]


class ModelOut(BaseModel):
    """``GET /v1/model``: the loaded checkpoint, from its config.json."""

    name: str | None
    version: str | None
    package_version: str
    status: str | None
    labels: list[str] | None
    positive_label: str | None
    image_size: int | None
    backend: str | None
    detector: str | None
    calibration: dict[str, Any]
    metrics: dict[str, dict[str, Any]]


class HealthOut(BaseModel):
    status: Literal["ok"]
    pid: int


class ErrorOut(BaseModel):
    """Every error answer; ``error_code`` is there when an uploaded image could not be read."""

    error: str
    error_code: ErrorCode | None = None


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry declaring these error statuses with the error object."""
    return {s: {"model": ErrorOut, "description": ERROR_DESCRIPTIONS[s]} for s in statuses}


ERROR_DESCRIPTIONS = {
    400: "Empty, truncated or undecodable upload, or a malformed request",
    405: "Method not allowed (the Allow header lists the methods)",
    413: "Upload over the byte limit, or too many pixels",
    415: "Not an image, or an unsupported content type",
    422: "Invalid request parameters",
    500: "Face detection or the server failed",
}
