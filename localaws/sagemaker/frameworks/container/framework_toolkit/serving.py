"""``serve``: the framework container's model server, on port 8080 (``SAGEMAKER_BIND_TO_PORT``).

The user's module is ``SAGEMAKER_PROGRAM`` (default ``inference.py``) in
``SAGEMAKER_SUBMIT_DIRECTORY``: an s3:// sourcedir.tar.gz that localaws has unpacked into
/opt/ml/code, or a folder such as /opt/ml/model/code (the SDK's other form, a model.tar.gz with
``code/inference.py``; also looked for when the variable is unset). Its requirements.txt is
installed first. The model is loaded once, before the server answers ``/ping``, with
``model_fn(model_dir)``; each ``POST /invocations`` runs ``transform_fn(model, body, content_type,
accept)`` or ``input_fn`` -> ``predict_fn`` -> ``output_fn``, each missing one taking the
framework's default (``handlers``). An unsupported content type answers 415; a user function
raising answers 500 with its error (and traceback) in the body and the log. A user module or
``model_fn`` that fails makes the server exit 1 with the traceback: the endpoint fails its health
check with those lines.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import signal
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from framework_toolkit import handlers, paths, requirements

DEFAULT_MODULE = "inference.py"
_REEXEC = "LOCALAWS_FRAMEWORK_SERVING_ENV"


def code_dir() -> Path:
    submit = os.environ.get("SAGEMAKER_SUBMIT_DIRECTORY", "")
    if submit.startswith("s3://"):
        return paths.base() / "code"
    if submit:
        return paths.local(submit[len("file://") :] if submit.startswith("file://") else submit)
    packaged = paths.base() / "model" / "code"
    return packaged if packaged.is_dir() else paths.base() / "code"


class Transformer:
    """The user's functions, each defaulting to the framework's."""

    def __init__(self, framework: str, module, model_dir: Path):
        defaults = handlers.DEFAULTS[framework]
        user = (
            {
                name: getattr(module, name, None)
                for name in ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")
            }
            if module
            else {}
        )
        if user.get("transform_fn") and (user.get("input_fn") or user.get("predict_fn") or user.get("output_fn")):
            raise ValueError(
                "Cannot use transform_fn implementation in conjunction with input_fn, predict_fn, "
                "and/or output_fn implementation"
            )
        self.framework = framework
        self.transform_fn = user.get("transform_fn")
        self.input_fn = user.get("input_fn") or defaults.input_fn
        self.predict_fn = user.get("predict_fn") or defaults.predict_fn
        self.output_fn = user.get("output_fn") or defaults.output_fn
        self.model = _call(user.get("model_fn") or defaults.model_fn, str(model_dir))

    def transform(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        data = body.decode("utf-8") if content_type in handlers.UTF8_TYPES else body
        if self.transform_fn:
            result = _call(self.transform_fn, self.model, data, content_type, accept)
        else:
            result = _call(
                self.output_fn, _call(self.predict_fn, _call(self.input_fn, data, content_type), self.model), accept
            )
        response, response_type = result if isinstance(result, tuple) else (result, accept)
        if isinstance(response, str):
            response = response.encode("utf-8")
        return bytes(response), response_type


def _call(function, *args):
    """A handler function, given the request context (None here) when it takes one more argument."""
    try:
        count = len(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        count = len(args)
    return function(*args, None) if count == len(args) + 1 else function(*args)


def _error_body(framework: str, error: Exception, trace: str) -> tuple[bytes, str]:
    if framework == "sklearn":  # sagemaker-containers' error response
        body = json.dumps({"error": type(error).__name__, "error-message": str(error), "stack-trace": trace})
        return body.encode(), "application/json"
    return f"{error}\n{trace}".encode(), "text/plain"


def _server(transformer: Transformer, default_accept: str):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # kept-alive connections, as the gateway keeps them

        def _answer(self, status: int, body: bytes = b"", content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            if self.path.split("?")[0] == "/ping":
                return self._answer(200, b"\n")
            if self.path.split("?")[0] == "/execution-parameters":
                return self._answer(
                    200,
                    json.dumps(
                        {"MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}
                    ).encode(),
                    "application/json",
                )
            self._answer(404, b"Not Found\n")

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.split("?")[0] != "/invocations":
                return self._answer(404, b"Not Found\n")
            content_type = (self.headers.get("Content-Type") or handlers.JSON).split(";")[0].strip()
            accept = self.headers.get("Accept") or ""
            if not accept or accept.strip() == "*/*":
                accept = default_accept
            try:
                response, response_type = transformer.transform(body, content_type, accept)
            except Exception as error:  # noqa: BLE001 - the user's function: its error is the answer
                trace = traceback.format_exc()
                print(trace, file=sys.stderr, flush=True)
                status = getattr(error, "status", 500) if isinstance(error, handlers.UnsupportedFormatError) else 500
                return self._answer(status, *_error_body(transformer.framework, error, trace))
            self._answer(200, response, response_type)

        def log_message(self, format, *args):  # noqa: A002 - one line per request, as gunicorn logs it
            sys.stdout.write(f"{self.address_string()} - {format % args}\n")
            sys.stdout.flush()

    return Handler


def main() -> int:
    framework = paths.framework()
    code = code_dir()
    if code.is_dir() and os.environ.get(_REEXEC) != "1":
        python = requirements.install(code)
        if python != sys.executable:  # requirements went into an environment of their own: serve from it
            os.environ[_REEXEC] = "1"
            os.execv(python, [python, os.path.realpath(sys.argv[0]), *sys.argv[1:]])
    program = os.environ.get("SAGEMAKER_PROGRAM") or DEFAULT_MODULE
    module = None
    try:
        if (code / program).is_file():
            sys.path.insert(0, str(code))
            module = importlib.import_module(program[:-3] if program.endswith(".py") else program)
        elif "SAGEMAKER_PROGRAM" in os.environ:
            print(
                f"SAGEMAKER_PROGRAM {program} is not in {code}: the framework's default handlers serve",
                file=sys.stderr,
                flush=True,
            )
        transformer = Transformer(framework, module, paths.base() / "model")
    except Exception:  # noqa: BLE001 - no model, no server: the health check fails with this
        traceback.print_exc()
        return 1
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT") or 8080)
    host = "0.0.0.0" if paths.in_container() else "127.0.0.1"
    server = ThreadingHTTPServer(
        (host, port), _server(transformer, os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", handlers.JSON))
    )
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=server.shutdown).start())
    print(
        f"localaws {framework} model server: {program if module else 'default handlers'} from {code}, "
        f"listening on {host}:{port}",
        flush=True,
    )
    server.serve_forever()
    server.server_close()
    return 0
