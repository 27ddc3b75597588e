"""``serve``: the SageMaker hosting contract for the digits model, on gunicorn.

SageMaker runs ``docker run <image> serve`` with the model artifact unpacked into
``/opt/ml/model`` and expects, on port 8080:

    GET  /ping          200 once the model is loaded (the health check)
    POST /invocations   a prediction for the request body

Inputs are raw 8x8 pixel values (0..16), 64 features per row, as the training
data has them (the model scales them itself):

    application/json    {"instances": [[64 numbers], ...]}, a bare list of rows, or one row
    text/csv            one row per line, no header

The answer (``Accept``: ``application/json``, the default, or ``text/csv``) gives
each row's predicted class and the probability of every class:

    {"predictions": [{"class": 3, "probabilities": [p0, ..., p9]}, ...]}
    3,p0,...,p9          (text/csv, one line per row)

Bad input is a 400, an unsupported ``Content-Type`` a 415, an unsupported
``Accept`` a 406, each with a plain-text message (SageMaker returns it to the
caller in a ModelError). ``X-Amzn-SageMaker-Custom-Attributes`` is echoed back.

Server settings (environment), as SageMaker's own serving containers name them:

    SAGEMAKER_BIND_TO_PORT            port (default 8080)
    SAGEMAKER_MODEL_SERVER_WORKERS    worker processes (default: one per CPU it may use)
    SAGEMAKER_MODEL_SERVER_THREADS    threads per worker (default 4; /ping stays answerable under load)
    SAGEMAKER_MODEL_SERVER_TIMEOUT    seconds a request may take before its worker is restarted (default 60)
    SAGEMAKER_MODEL_SERVER_KEEPALIVE  seconds an idle keep-alive connection is kept (default 75)
    SM_MODEL_DIR                      the model directory (default <SAGEMAKER_BASE_DIR or /opt/ml>/model)

SIGTERM stops gracefully: no new connections, requests in flight are answered
(up to 30 s), then the workers exit.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

log = logging.getLogger("digits.serving")

DEFAULT_PORT = 8080
JSON = "application/json"
CSV = "text/csv"
CUSTOM_ATTRIBUTES = "HTTP_X_AMZN_SAGEMAKER_CUSTOM_ATTRIBUTES"
MAX_BODY = 6 * 1024 * 1024  # InvokeEndpoint's own limit


class BadRequest(Exception):
    status = "400 Bad Request"


class UnsupportedMediaType(BadRequest):
    status = "415 Unsupported Media Type"


class NotAcceptable(BadRequest):
    status = "406 Not Acceptable"


def model_dir(env=None) -> Path:
    env = os.environ if env is None else env
    if env.get("SM_MODEL_DIR"):
        return Path(env["SM_MODEL_DIR"])
    return Path(env.get("SAGEMAKER_BASE_DIR") or "/opt/ml") / "model"


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def parse_rows(body: bytes, content_type: str, input_size: int | None = None) -> list:
    """Feature rows from a request body; ``BadRequest`` says what is wrong with it. Without
    ``input_size`` (script mode's ``input_fn``, which has no model) ``check_rows`` comes later."""
    if isinstance(body, str):
        body = body.encode()
    media = _media_type(content_type) or JSON
    if media in (JSON, "application/jsonlines", "application/x-json"):
        try:
            data = json.loads(body or b"null")
        except ValueError as error:
            raise BadRequest(f"the body is not valid JSON: {error}") from None
        if isinstance(data, dict):
            if "instances" in data:
                data = data["instances"]
            elif "inputs" in data:
                data = data["inputs"]
            else:
                raise BadRequest('a JSON object must hold the rows under "instances"')
        if isinstance(data, list) and data and not isinstance(data[0], list):
            data = [data]  # one row
        rows = data
    elif media == CSV:
        rows = []
        for number, line in enumerate(body.decode("utf-8", "replace").splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append([float(value) for value in line.split(",")])
            except ValueError:
                raise BadRequest(f"CSV line {number} is not numeric: {line[:80]!r}") from None
    else:
        raise UnsupportedMediaType(f"unsupported Content-Type {content_type!r}: send {JSON} or {CSV}")
    if not isinstance(rows, list) or not rows:
        raise BadRequest("no rows to predict: send one or more rows of features")
    return rows if input_size is None else check_rows(rows, input_size)


def check_rows(rows: list, input_size: int) -> list:
    """``rows`` if each is a list of ``input_size`` numbers; else ``BadRequest``."""
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != input_size:
            size = len(row) if isinstance(row, list) else type(row).__name__
            raise BadRequest(f"row {index} has {size} features; the model takes {input_size} (8x8 pixel values 0..16)")
        for value in row:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BadRequest(f"row {index} holds a non-numeric value {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise BadRequest(f"row {index} holds {value!r}: features must be finite numbers")
    return rows


def format_predictions(classes: list, probabilities: list, accept: str | None) -> tuple[bytes, str]:
    media = _media_type(accept)
    if media in ("", "*/*", JSON, "application/*"):
        out = {
            "predictions": [
                {"class": label, "probabilities": [round(p, 6) for p in row]}
                for label, row in zip(classes, probabilities, strict=True)
            ]
        }
        return json.dumps(out, separators=(",", ":")).encode(), JSON
    if media in (CSV, "text/*"):
        lines = [
            ",".join([str(label)] + [f"{p:.6f}" for p in row])
            for label, row in zip(classes, probabilities, strict=True)
        ]
        return ("\n".join(lines) + "\n").encode(), CSV
    raise NotAcceptable(f"unsupported Accept {accept!r}: ask for {JSON} or {CSV}")


class Predictor:
    """The loaded model, answering feature rows with classes and probabilities."""

    def __init__(self, directory: Path):
        # torch loads with the model, not with the module.
        import torch  # noqa: PLC0415

        from . import model as digits_model  # noqa: PLC0415

        if not os.environ.get("OMP_NUM_THREADS"):
            torch.set_num_threads(1)  # one request, one core: the workers are the parallelism
        self.torch = torch
        self.digits_model = digits_model
        self.model = digits_model.load(directory)
        config = getattr(self.model, "config", {})
        self.input_size = int(config.get("input_size", 64))
        self.classes = config.get("classes")

    def predict(self, rows: list) -> tuple[list, list]:
        probabilities = self.digits_model.predict_proba(self.model, rows)
        indices = probabilities.argmax(dim=1).tolist()
        labels = [self.classes[i] for i in indices] if self.classes else indices
        return labels, probabilities.tolist()


class App:
    """The WSGI application: /ping and /invocations."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/ping" and method in ("GET", "HEAD"):
            return self._answer(start_response, "200 OK", b"", "text/plain")
        if path == "/invocations" and method == "POST":
            return self._invoke(environ, start_response)
        if path in ("/ping", "/invocations"):
            return self._answer(start_response, "405 Method Not Allowed", b"method not allowed\n", "text/plain")
        return self._answer(start_response, "404 Not Found", b"not found\n", "text/plain")

    def _invoke(self, environ, start_response):
        extra = []
        if environ.get(CUSTOM_ATTRIBUTES):
            extra.append(("X-Amzn-SageMaker-Custom-Attributes", environ[CUSTOM_ATTRIBUTES]))
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length > MAX_BODY:
                raise BadRequest(f"the body is {length} bytes; at most {MAX_BODY} are accepted")
            body = environ["wsgi.input"].read(length) if length else b""
            rows = parse_rows(body, environ.get("CONTENT_TYPE", ""), self.predictor.input_size)
            labels, probabilities = self.predictor.predict(rows)
            payload, media = format_predictions(labels, probabilities, environ.get("HTTP_ACCEPT"))
        except BadRequest as error:
            return self._answer(start_response, error.status, f"{error}\n".encode(), "text/plain", extra)
        return self._answer(start_response, "200 OK", payload, media, extra)

    @staticmethod
    def _answer(start_response, status: str, body: bytes, media: str, extra=()):
        start_response(status, [("Content-Type", media), ("Content-Length", str(len(body))), *extra])
        return [body]


def usable_cpus() -> int:
    """The CPUs this process may run on: a container limited to a cpuset (``docker run --cpuset-cpus``)
    sees them all in ``os.cpu_count()``, and more workers than CPUs only contend."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def server_options(env=None) -> dict:
    env = os.environ if env is None else env
    port = int(env.get("SAGEMAKER_BIND_TO_PORT") or DEFAULT_PORT)
    # Outside a container (SAGEMAKER_BASE_DIR: a process standing in for one) listen on loopback only.
    host = "127.0.0.1" if env.get("SAGEMAKER_BASE_DIR") else "0.0.0.0"
    timeout = int(env.get("SAGEMAKER_MODEL_SERVER_TIMEOUT") or 60)
    return {
        "bind": f"{host}:{port}",
        "workers": int(env.get("SAGEMAKER_MODEL_SERVER_WORKERS") or usable_cpus()),
        "worker_class": "gthread",
        "threads": int(env.get("SAGEMAKER_MODEL_SERVER_THREADS") or 4),
        "timeout": timeout,
        "graceful_timeout": 30,
        "keepalive": int(env.get("SAGEMAKER_MODEL_SERVER_KEEPALIVE") or 75),
        "backlog": 2048,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": env.get("SAGEMAKER_MODEL_SERVER_LOG_LEVEL", "info"),
        "preload_app": False,  # each worker loads the model itself: torch and fork do not mix
        "proc_name": "digits-serve",
        # gunicorn >= 25 opens a control socket in $HOME by default: one per host, so several
        # servers on one machine would fight over it. Older gunicorns lack the setting.
        "control_socket_disable": True,
    }


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    directory = model_dir()
    config = directory / "model_config.json"
    if not config.is_file():
        print(
            f"ERROR no model to serve: {config} does not exist (the model artifact is unpacked into {directory})",
            file=sys.stderr,
            flush=True,
        )
        return 1
    try:
        from gunicorn.app.base import BaseApplication  # noqa: PLC0415 - its absence is reported, below
    except ImportError:
        print("ERROR gunicorn is not installed in this image", file=sys.stderr, flush=True)
        return 1

    class Server(BaseApplication):
        def __init__(self, options: dict):
            self.options = options
            super().__init__()

        def load_config(self):
            for key, value in self.options.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self):
            predictor = Predictor(directory)
            log.info("worker %d serving %s (%d features)", os.getpid(), directory, predictor.input_size)
            return App(predictor)

    options = server_options()
    log.info(
        "serving %s on %s with %d worker(s) x %d thread(s)",
        directory,
        options["bind"],
        options["workers"],
        options["threads"],
    )
    Server(options).run()
    return 0
