"""The job routes: submit a video or a dub (checked, then queued), follow a job, fetch its mp4, cancel or delete
it; and the server's health. Each group is a router the app factory includes."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..settings import Settings
from .audiofeed import StreamSlots
from .jobs import JobService
from .schemas import DUB_FILES, VIDEO_FILES, Health, JobCreated, JobStatus, dub_form, error_responses, video_form
from .uploads import check_upload_headers, read_upload
from .validation import validate_dub, validate_submission

FILE_CHUNK = 256 * 1024  # bytes per read when sending an mp4
SUBMIT_ERRORS = (400, 408, 413, 415, 422, 429, 503)


async def accept(request: Request, service: JobService, settings: Settings, file_fields: tuple[str, ...],
                 validate) -> JSONResponse:
    """A job slot, the upload streamed into its folder and checked by `validate`, then queued (202); the slot
    is given back on any failure."""
    boundary = check_upload_headers(request, settings.max_upload_bytes)
    job = service.reserve()
    try:
        upload = await read_upload(request, boundary, job.folder, settings.max_upload_bytes, file_fields)
        job_request = await run_in_threadpool(validate, upload, settings)
    except BaseException:
        service.release(job)
        raise
    service.submit(job, job_request)
    return JSONResponse({"id": job.id}, status_code=202, headers={"Location": f"/v1/videos/{job.id}"})


def _form(schema: dict) -> dict:
    """The OpenAPI request body of a multipart form (the body is parsed as it streams in, not by FastAPI)."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def video_routes(settings: Settings, service: JobService, auth: list) -> APIRouter:
    """POST /v1/videos and the routes every job (video or dub) is followed, fetched and removed by."""
    router = APIRouter(prefix="/v1/videos", tags=["videos"], dependencies=auth)
    deny = (401,) if settings.token else ()

    @router.post("", status_code=202, response_model=JobCreated, summary="Submit a portrait and speech; returns "
                 "the job id", responses=error_responses(*deny, *SUBMIT_ERRORS), openapi_extra=_form(video_form()))
    async def submit(request: Request) -> JSONResponse:
        """Everything is checked before the job is queued: a 202 means it will render."""
        return await accept(request, service, settings, VIDEO_FILES, validate_submission)

    @router.get("/{job_id}", response_model=JobStatus, response_model_exclude_unset=True,
                summary="A job's status and progress", responses=error_responses(*deny, 404))
    async def status(job_id: str) -> dict:
        """`progress` is the fraction of frames written; `error` says why a failed job failed."""
        return service.get(job_id).public()

    @router.get("/{job_id}/file", response_class=Response, summary="The finished mp4 (H.264 + AAC)", responses={
        200: {"content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}},
        **error_responses(*deny, 404, 409)})
    async def video(job_id: str) -> StreamingResponse:
        """The mp4 of a done job; 409 while it is queued or running, or when it failed or was cancelled."""
        f, size = service.open_video(job_id)

        def chunks():
            """The mp4 in pieces; the file is closed when the response ends."""
            with f:
                while data := f.read(FILE_CHUNK):
                    yield data

        return StreamingResponse(chunks(), media_type="video/mp4", headers={
            "Content-Length": str(size), "Content-Disposition": f'attachment; filename="{job_id}.mp4"'})

    @router.delete("/{job_id}", response_model=JobStatus,
                   summary="Cancel a queued/running job, or delete a finished one and its files",
                   responses={200: {"description": "cancelled (it was queued)", "model": JobStatus},
                              202: {"description": "cancelling (it is running; it stops at its next frame)",
                                    "model": JobStatus},
                              204: {"description": "removed with its files"}, **error_responses(*deny, 404)})
    async def delete(job_id: str) -> Response:
        """A cancelled or removed job keeps no files; a removed one is forgotten (404 afterwards)."""
        outcome, job = service.delete(job_id)
        if outcome == "removed":
            return Response(status_code=204)
        return JSONResponse(job.public(), status_code=200 if outcome == "cancelled" else 202)

    return router


def dub_routes(settings: Settings, service: JobService, auth: list) -> APIRouter:
    """POST /v1/dubs: a dub is a video job once accepted."""
    router = APIRouter(prefix="/v1/dubs", tags=["dubs"], dependencies=auth)
    deny = (401,) if settings.token else ()

    @router.post("", status_code=202, response_model=JobCreated,
                 summary="Submit a video and new speech to re-sync its lips; returns the job id",
                 description="The job is a video job: follow it, fetch it and cancel it at /v1/videos/{id}.",
                 responses=error_responses(*deny, *SUBMIT_ERRORS), openapi_extra=_form(dub_form()))
    async def submit_dub(request: Request) -> JSONResponse:
        """Checked like a video submission; the same limits, queue and errors."""
        return await accept(request, service, settings, DUB_FILES, validate_dub)

    return router


def server_routes(settings: Settings, service: JobService, slots: StreamSlots, auth: list) -> APIRouter:
    """GET /v1/health."""
    router = APIRouter(prefix="/v1", tags=["server"], dependencies=auth)

    @router.get("/health", response_model=Health, summary="Queue, job and stream counts",
                responses=error_responses(*((401,) if settings.token else ())))
    async def health() -> dict:
        """Whether the server accepts work, and how busy it is."""
        counts = service.counts()
        return {"status": "stopping" if service.closing else "ok", "workers": settings.workers,
                "queued": counts["queued"], "running": counts["running"], "jobs": sum(counts.values()),
                "streams": slots.active}

    return router
