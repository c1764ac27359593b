"""The FastAPI application of ``robustcars serve``: thin, typed endpoints over the library the CLI uses.

JSON API (documented at ``/docs``; every error is ``{"error": "..."}`` with a 4xx status, a bug a 500 whose
traceback goes to the server log only):

    GET  /api/runs                 runs with their metrics, robust accuracy per attack, job state
    POST /api/predict              photo upload -> top-k, entropy, optional Grad-CAM and car prefilter
    POST /api/attack               photo + attack + eps -> adversarial image, perturbation, top-k, rank changes,
                                   Grad-CAM of both; a long attack (registry.runs_long) -> 202 and a job
    GET  /api/attack-jobs/{id}     an attack job: state, model calls and seconds so far, the result when done
    POST /api/attack-jobs/{id}/cancel  stop it at its next model call
    POST /api/train                training config -> a background job writing an ordinary run folder
    GET  /api/jobs                 training jobs, the running one first, then the newest
    GET  /api/jobs/{id}            state, progress, epochs, log tail
    GET  /api/jobs/{id}/events     server-sent events with the same, until the job ends
    POST /api/jobs/{id}/cancel     Ctrl-C for the job (it stays resumable)
    POST /api/jobs/{id}/resume     continue an interrupted or cancelled job
    GET  /api/reports              report folders written by ``robustcars report``; served under /reports/

Pages (Jinja2, plain JavaScript, nothing from a CDN): ``/`` inference and live attacks, ``/train``, ``/runs``;
the API docs at ``/docs`` and ``/redoc`` serve Swagger UI and ReDoc from the ``fastapi-offline`` package.

Work per request is bounded: every integer attack parameter has an upper bound (the registry), an attack
stops after ``--attack-seconds`` (503) and releases the model, a request waits at most as long for the model
(503), JSON bodies are limited in size and nesting (413 / 400), photos by pixels and aspect ratio (422).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field, create_model

from robustcars.config import TrainConfig, train_options
from robustcars.errors import CheckpointError, ConfigError, DataError, RobustcarsError
from robustcars.registry import (
    ARCHITECTURES,
    EPS_GRID,
    attack_names,
    attack_norms,
    check_eps,
    runs_long,
    validate_params,
)
from robustcars.web.attack_jobs import AttackBusy, AttackJobs, UnknownAttackJob
from robustcars.web.jobs import Busy, JobManager, UnknownJob
from robustcars.web.listing import list_datasets
from robustcars.web.paths import OutsideRoot, check_name, inside

log = logging.getLogger("robustcars.web")
HERE = Path(__file__).resolve().parent
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeSettings:
    runs: Path
    data: Path
    reports: Path
    host: str = "127.0.0.1"
    token: str | None = None
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_jobs: int = 1
    attack_seconds: float = 60.0  # the longest one attack request computes (then 503)
    attack_job_seconds: float = 900.0  # the longest one attack job computes (then it fails)

    def validate(self) -> ServeSettings:
        """Raises ConfigError: a public host without a token, or limits out of range."""
        if self.host not in LOOPBACK and not self.token:
            raise ConfigError(f"--host {self.host} is reachable from other machines: give --token or set "
                              "$ROBUSTCARS_TOKEN (every API call must then carry it)")
        if self.max_upload_bytes < 1 or self.max_pixels < 1 or self.max_jobs < 1:
            raise ConfigError("upload, pixel and job limits must be >= 1")
        if not 0 < self.attack_seconds <= 3600:
            raise ConfigError(f"--attack-seconds must be in (0, 3600], got {self.attack_seconds}")
        if not 0 < self.attack_job_seconds <= 24 * 3600:
            raise ConfigError(f"--attack-job-seconds must be in (0, 86400], got {self.attack_job_seconds}")
        return self


MAX_JSON_BYTES = 64 * 1024  # a JSON body or the params field larger than this is refused (413)
MAX_JSON_DEPTH = 32  # and one nested deeper than this (400): json.loads would recurse into a RecursionError


def json_depth(text: str | bytes) -> int:
    """The deepest nesting of ``[``/``{`` in a JSON text, strings skipped (no parsing, no recursion)."""
    data = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    depth = deepest = 0
    in_string = escaped = False
    for ch in data:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_params(text: str) -> dict[str, Any]:
    """The attack-parameter field: a JSON object of at most ``MAX_JSON_BYTES`` and ``MAX_JSON_DEPTH`` levels.

    Raises:
        HTTPException: 413 too large, 400 too deep, not JSON or not an object.
    """
    if len(text.encode()) > MAX_JSON_BYTES:
        raise HTTPException(413, f"params larger than {MAX_JSON_BYTES // 1024} kB")
    if json_depth(text) > MAX_JSON_DEPTH:
        raise HTTPException(400, f"params nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        given = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise HTTPException(400, "params must be a JSON object") from None
    if not isinstance(given, dict):
        raise HTTPException(400, "params must be a JSON object")
    return given


_WEB_PATTERNS = {"weights": "^(imagenet|none)$"}  # a browser may not name a weights file on the server


def _train_request_model() -> type[BaseModel]:
    """The training form's request model, built from :func:`robustcars.config.train_options` (``web=True``):
    the same defaults, ranges and help as ``robustcars train``. The architecture is checked by
    :func:`_train_args` (a 400 naming the choices); other choices by a pattern (422)."""
    hints = typing.get_type_hints(TrainConfig)
    fields: dict[str, Any] = {
        "name": (str, Field(description="new run folder inside --runs")),
        "data": (str, Field(".", description="dataset folder, relative to --data ('.' = the data root itself)")),
    }
    for name, default, o in train_options(web=True):
        pattern = _WEB_PATTERNS.get(name) or (f"^({'|'.join(o.choices)})$" if o.choices and name != "arch" else None)
        fields[name] = (hints[name], Field(default, ge=o.min if o.ge is None else o.ge, le=o.max, gt=o.gt, lt=o.lt,
                                           pattern=pattern, description=o.help))
    return create_model("TrainRequest", __doc__="The training form; the options of ``robustcars train``.", **fields)


TrainRequest = _train_request_model()


def train_form() -> list[dict[str, Any]]:
    """The training form's fields for the template: label, name, default, range and choices, from the config."""
    out = []
    for name, default, o in train_options(web=True):
        choices = ["imagenet", "none"] if name == "weights" else list(o.choices or ())
        out.append({"name": name, "label": o.web, "default": "" if default is None else default, "help": o.help,
                    "min": o.min if o.ge is None else o.ge, "max": o.max, "choices": choices,
                    "kind": "select" if choices else "number"})
    return out


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(settings: ServeSettings) -> FastAPI:
    """Build the app for ``settings`` (validated); the CLI runs it with uvicorn, tests with TestClient."""
    from robustcars.web.inference import Models

    settings.validate()
    for root in (settings.runs, settings.reports):
        root.mkdir(parents=True, exist_ok=True)
    from fastapi_offline import FastAPIOffline  # Swagger UI and ReDoc assets from the package, no CDN

    app = FastAPIOffline(title="robustcars", description="Adversarial robustness of car classifiers: inference, "
                         "live attacks and training.", version=_version())
    jobs = JobManager(settings.runs, max_running=settings.max_jobs)
    models = Models(settings.attack_seconds)
    attack_jobs = AttackJobs(settings.attack_job_seconds)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.state.jobs, app.state.settings = jobs, settings
    app.router.add_event_handler("shutdown", jobs.shutdown)
    app.router.add_event_handler("shutdown", models.stop.set)  # a running attack ends at its next step
    app.router.add_event_handler("shutdown", attack_jobs.shutdown)

    _error_handlers(app)
    _json_limits(app)
    _token_gate(app, settings)
    _pages(app, settings, templates)
    _api(app, settings, jobs, models, attack_jobs)
    return app


def _json_limits(app: FastAPI) -> None:
    """JSON request bodies: at most ``MAX_JSON_BYTES`` (413) and ``MAX_JSON_DEPTH`` levels (400), checked before
    FastAPI parses them."""

    @app.middleware("http")
    async def json_limits(request: Request, call_next):
        if "json" in request.headers.get("content-type", "") and request.method in ("POST", "PUT", "PATCH"):
            size = request.headers.get("content-length")
            if size is not None and size.isdigit() and int(size) > MAX_JSON_BYTES:
                return error(413, f"JSON body larger than {MAX_JSON_BYTES // 1024} kB")
            body = await request.body()  # cached by Starlette for the endpoint
            if len(body) > MAX_JSON_BYTES:
                return error(413, f"JSON body larger than {MAX_JSON_BYTES // 1024} kB")
            if json_depth(body) > MAX_JSON_DEPTH:
                return error(400, f"JSON body nested deeper than {MAX_JSON_DEPTH} levels")
        return await call_next(request)


def _token_gate(app: FastAPI, settings: ServeSettings) -> None:
    """The token check (only when ``settings.token`` is set)."""

    @app.middleware("http")
    async def token_gate(request: Request, call_next):
        """With a token, every /api/ and /reports/ request carries it: header, ?token= or the cookie that a page
        opened with ?token= sets (so report pages and server-sent events work in a browser)."""
        if settings.token is None:
            return await call_next(request)
        given = (request.headers.get("x-robustcars-token") or request.query_params.get("token")
                 or request.cookies.get("robustcars_token") or "")
        ok = secrets.compare_digest(given.encode(), settings.token.encode())
        if request.url.path.startswith(("/api/", "/reports")) and not ok:
            return error(401, "missing or wrong token (header X-Robustcars-Token, ?token= or the page's cookie)")
        response = await call_next(request)
        if ok and request.query_params.get("token"):
            response.set_cookie("robustcars_token", settings.token, httponly=True, samesite="strict")
        return response


def _pages(app: FastAPI, settings: ServeSettings, templates: Jinja2Templates) -> None:
    """The three pages, the static files and the report folders."""

    def page(template: str):
        async def handler(request: Request) -> HTMLResponse:
            return templates.TemplateResponse(request, template, {"attacks": attack_names(),
                                                                   "attack_norms": attack_norms(),
                                                                   "eps_grid": EPS_GRID,
                                                                   "train_form": train_form(),
                                                                   "datasets": list_datasets(settings.data)})
        return handler

    for url, template in (("/", "inference.html"), ("/train", "train.html"), ("/runs", "runs.html")):
        app.add_api_route(url, page(template), methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.mount("/reports", StaticFiles(directory=str(settings.reports), html=True), name="reports")


def _api(app: FastAPI, settings: ServeSettings, jobs: JobManager, models, attack_jobs: AttackJobs) -> None:
    """The JSON API (see the module docstring); the work is done by the library functions the CLI uses."""
    _listing_api(app, settings, jobs)
    _inference_api(app, settings, models, attack_jobs)
    _job_api(app, settings, jobs)


def _run_dir(settings: ServeSettings, name: str) -> Path:
    """The trained run ``name`` under ``--runs``; 404 when it has no best.pt."""
    path = inside(settings.runs, check_name(name, "run"))
    if not (path / "best.pt").is_file():
        raise HTTPException(404, f"no trained run {name!r} in {settings.runs}")
    return path


async def _read_upload(settings: ServeSettings, file: UploadFile) -> bytes:
    """The uploaded bytes, read at most one byte past the limit; 413 when larger, 400 when empty."""
    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise HTTPException(413, f"upload larger than {settings.max_upload_bytes // (1024 * 1024)} MB")
    if not data:
        raise HTTPException(400, "empty upload")
    return data


def _listing_api(app: FastAPI, settings: ServeSettings, jobs: JobManager) -> None:
    @app.get("/api/runs")
    def runs() -> dict[str, Any]:
        from robustcars.web.listing import list_runs

        return {"runs": list_runs(settings.runs, jobs)}

    @app.get("/api/reports")
    def reports() -> dict[str, Any]:
        from robustcars.web.listing import list_reports

        return {"reports": list_reports(settings.reports)}


def _inference_api(app: FastAPI, settings: ServeSettings, models, attack_jobs: AttackJobs) -> None:
    from robustcars.web.inference import attack_job_work, attack_upload, predict_upload

    @app.post("/api/predict")
    async def api_predict(file: Annotated[UploadFile, File()], run: Annotated[str, Form()],
                          top_k: Annotated[int | None, Form(ge=1, le=1000)] = None,
                          cam: Annotated[bool, Form()] = False,
                          prefilter: Annotated[bool, Form()] = False,
                          threshold: Annotated[float, Form(ge=0, le=1)] = 0.1) -> dict[str, Any]:
        data, path = await _read_upload(settings, file), _run_dir(settings, run)
        return await asyncio.to_thread(predict_upload, models, path, data, file.filename or "upload", top_k=top_k,
                                       cam=cam, prefilter=prefilter, threshold=threshold,
                                       max_pixels=settings.max_pixels)

    @app.post("/api/attack")
    async def api_attack(file: Annotated[UploadFile, File()], run: Annotated[str, Form()],
                         attack: Annotated[str, Form()] = "fgsm", eps: Annotated[float, Form()] = 0.01,
                         params: Annotated[str, Form(description="JSON object of attack parameters")] = "{}",
                         top_k: Annotated[int | None, Form(ge=1, le=1000)] = None) -> dict[str, Any]:
        check_eps([eps])
        given = parse_params(params)
        values = validate_params(attack, given)
        data, path = await _read_upload(settings, file), _run_dir(settings, run)
        name, chosen = file.filename or "upload", {k: values[k] for k in given}
        if not runs_long(attack, values):
            return await asyncio.to_thread(attack_upload, models, path, data, name, attack=attack, eps=eps,
                                           params=chosen, top_k=top_k, max_pixels=settings.max_pixels)
        work = await asyncio.to_thread(attack_job_work, models, path, data, name, attack=attack, eps=eps,
                                       params=chosen, top_k=top_k, max_pixels=settings.max_pixels)
        job = attack_jobs.start(work, {"run": run, "attack": attack, "eps": eps})
        return JSONResponse(job.status(), status_code=202)

    @app.get("/api/attack-jobs/{job_id}")
    def api_attack_job(job_id: str) -> dict[str, Any]:
        return attack_jobs.get(job_id).status()

    @app.post("/api/attack-jobs/{job_id}/cancel")
    def api_attack_cancel(job_id: str) -> dict[str, Any]:
        return attack_jobs.cancel(job_id).status()


def _job_api(app: FastAPI, settings: ServeSettings, jobs: JobManager) -> None:
    @app.post("/api/train", status_code=202)
    def api_train(req: TrainRequest) -> dict[str, Any]:
        args = _train_args(req, settings)
        job = jobs.start(req.name, args)
        return {"job": job.id, "run": req.name, "status_url": f"/api/jobs/{job.id}"}

    @app.get("/api/jobs")
    def api_jobs() -> dict[str, Any]:
        return {"jobs": jobs.listed()}

    @app.get("/api/jobs/{job_id}")
    def api_job(job_id: str) -> dict[str, Any]:
        return jobs.status(job_id)

    @app.get("/api/jobs/{job_id}/events")
    async def api_job_events(job_id: str) -> StreamingResponse:
        jobs.get(job_id)

        async def stream():
            last = None
            while True:
                status = jobs.status(job_id)
                text = json.dumps(status)
                if text != last:
                    yield f"data: {text}\n\n"
                    last = text
                if status["state"] not in ("running",):
                    yield "event: end\ndata: {}\n\n"
                    return
                await asyncio.sleep(0.5)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/api/jobs/{job_id}/cancel")
    def api_cancel(job_id: str) -> dict[str, Any]:
        jobs.cancel(job_id)
        return {"job": job_id, "state": "cancelling"}

    @app.post("/api/jobs/{job_id}/resume", status_code=202)
    def api_resume(job_id: str) -> dict[str, Any]:
        job = jobs.resume(job_id)
        return {"job": job.id, "state": job.state}


def _train_args(req: TrainRequest, settings: ServeSettings) -> list[str]:
    """``robustcars train`` options from the form, validated as the CLI would before anything starts.

    Raises:
        ConfigError: a bad name, an unknown architecture, a data folder outside ``--data`` or without data.
    """
    check_name(req.name, "run name")
    target = settings.runs / req.name
    if target.is_symlink() or target.exists():
        raise ConfigError(f"run {req.name!r} exists already (a folder, file or link); choose another name")
    if req.arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {req.arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    data = inside(settings.data, req.data)
    if not data.is_dir():
        raise DataError(f"no dataset folder {req.data!r} in the data root")
    given = req.model_dump(exclude={"name", "data"})
    cfg = TrainConfig(data=str(data), out=str(settings.runs / req.name), **given).validate()
    from robustcars.data.cars import load_cars

    load_cars(cfg.data)  # the layout and classes, before a process is started
    args = cfg.args()
    i = args.index("--out")
    return args[:i] + args[i + 2:]  # the job manager gives --out


def _error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": message}``: 4xx for what the client can fix, 500 for a bug (logged here)."""
    from robustcars.web.inference import ModelBusy, OverBudget

    status_of = {OutsideRoot: 403, Busy: 409, UnknownJob: 404, AttackBusy: 409, UnknownAttackJob: 404,
                 CheckpointError: 422, DataError: 422,
                 ConfigError: 400, OverBudget: 503, ModelBusy: 503}

    @app.exception_handler(RobustcarsError)
    async def user_error(request: Request, exc: RobustcarsError) -> JSONResponse:
        status = next((code for cls, code in status_of.items() if isinstance(exc, cls)), 400)
        return error(status, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def starlette_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in exc.errors()]
        return error(422, "; ".join(parts))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(500, f"unexpected {exc.__class__.__name__}: a bug in robustcars (details in the server log)")


def _version() -> str:
    from robustcars.version import __version__

    return __version__
