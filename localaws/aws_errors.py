"""Errors in each service's own wire protocol, and moto's failures given that shape.

botocore reads an error by its service's protocol (botocore's model says which):
``json`` (``__type``), ``rest-json`` (``x-amzn-ErrorType``), ``query``
(``<ErrorResponse>``), ``ec2`` (``<Response><Errors>``) and ``rest-xml``
(``<Error>``). ``AwsError`` is what every part of localaws raises for an error answer and
``error`` renders it, in whichever protocol the request speaks.

moto answers what it does not implement, and what it crashes on (malformed XML, say), with
Flask's HTML 500 page, which no client parses; ``MotoErrors`` wraps moto so that every answer
is the service's own error with a code: ``NotImplemented`` (501) naming the operation moto
lacks, ``MalformedXML`` / ``SerializationException`` (400) for a body that does not parse (or,
for a JSON service, whose values do not fit the operation's shapes in botocore's model),
``InternalFailure`` (500) for a crash, and the same for moto's bare HTML error pages.
"""

from __future__ import annotations

import json
import logging
import uuid
import zlib
from functools import lru_cache
from urllib.parse import parse_qs
from xml.etree.ElementTree import ParseError
from xml.parsers.expat import ExpatError
from xml.sax.saxutils import escape

from botocore.model import OperationNotFoundError

from localaws import bodies

log = logging.getLogger(__name__)

JSON_TYPES = ("application/x-amz-json-1.0", "application/x-amz-json-1.1")
FORM = "application/x-www-form-urlencoded"
EC2_VERSION = "2016-11-15"
#: What moto may be sent: S3 takes objects up to AWS's 5 GiB single PUT, the rest is API calls.
MAX_S3_BODY = 5 * 1024**3
MAX_API_BODY = 64 * 1024 * 1024
#: aws-chunked framing (a chunk's size, signature and line ends) around S3 chunks of at least 8 KiB
#: costs under 1/64 of the data; beyond that, and this much, a streamed upload is not what it said.
_AWS_CHUNKED_SLACK = 64 * 1024


class AwsError(Exception):
    """An error answer: AWS's ``code``, its message and HTTP status; ``error`` renders it in the
    request's protocol. Subclasses name a code (``code = ...``); any other is given as it comes."""

    code = "InternalFailure"
    status = 400

    def __init__(self, message: str, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class ValidationError(AwsError):
    """A member that breaks its operation's model (required, pattern, enum, length, range)."""

    code = "ValidationException"


class SerializationError(AwsError):
    """The body is not JSON, or a value's JSON type does not fit its member (AWS's JSON reader)."""

    code = "SerializationException"


class RequestTooLarge(AwsError):
    code = "RequestEntityTooLargeException"
    status = 413


@lru_cache(maxsize=None)
def service_protocol(service: str) -> str:
    """The protocol botocore's model gives ``service`` (a botocore service name); rest-xml if unknown."""
    import botocore.session  # noqa: PLC0415

    try:
        model = botocore.session.get_session().get_service_model(service)
    except Exception:  # noqa: BLE001 - not a service botocore knows
        return "rest-xml"
    protocols = model.metadata.get("protocols") or [model.protocol]
    for protocol in protocols:  # botocore's own preference order, among those answered here
        if protocol in ("json", "rest-json", "query", "ec2", "rest-xml"):
            return protocol
    return "json"


def request_protocol(environ: dict, service: str | None) -> str:
    """The protocol a request speaks: its X-Amz-Target or form body where it shows, else its service's."""
    content_type = environ.get("CONTENT_TYPE", "")
    if environ.get("HTTP_X_AMZ_TARGET"):
        return "json"
    if content_type.startswith(FORM) and service != "s3":
        if service == "ec2":
            return "ec2"
        if service is None and _form_value(environ, "Version") == EC2_VERSION:
            return "ec2"
        return "query"
    if service:
        return service_protocol(service)
    return "rest-json" if content_type.startswith("application/json") else "rest-xml"


def error(environ: dict, protocol: str, code: str, message: str, status: int) -> tuple[int, list, bytes]:
    """(status, headers, body) of AWS's error ``code`` in ``protocol``."""
    request_id = str(uuid.uuid4())
    if protocol in ("json", "rest-json"):
        content_type = environ.get("CONTENT_TYPE", "")
        if protocol == "rest-json":
            content_type = "application/json"
        elif content_type not in JSON_TYPES:
            content_type = "application/x-amz-json-1.1"
        headers = [("Content-Type", content_type), ("x-amzn-ErrorType", code), ("x-amzn-RequestId", request_id)]
        body = json.dumps({"__type": code, "message": message}).encode()
    elif protocol == "query":
        fault = "Receiver" if status >= 500 else "Sender"
        headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]
        body = (
            f"<ErrorResponse><Error><Type>{fault}</Type><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
    elif protocol == "ec2":
        headers = [("Content-Type", "text/xml;charset=UTF-8")]
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{escape(code)}</Code>'
            f"<Message>{escape(message)}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
        ).encode()
    else:  # rest-xml (S3 and friends)
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)]
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(code)}</Code>'
            f"<Message>{escape(message)}</Message><RequestId>{request_id}</RequestId></Error>"
        ).encode()
    if environ.get("REQUEST_METHOD") == "HEAD":
        body = b""  # a HEAD answer has no body: the status tells
    headers.append(("Content-Length", str(len(body))))
    return status, headers, body


def answer(environ: dict, protocol: str, raised: AwsError) -> tuple[int, list, bytes]:
    """(status, headers, body) of an ``AwsError`` in ``protocol``."""
    return error(environ, protocol, raised.code, raised.message, raised.status)


def respond(environ, start_response, protocol: str, code: str, message: str, status: int, exc_info=None):
    status, headers, body = error(environ, protocol, code, message, status)
    start_response(f"{status} {_REASONS.get(status, 'Error')}", headers, exc_info)
    return [body]


_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Request Entity Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}


def json_request(environ: dict, limit: int, service: str | None = None, operation: str | None = None):
    """A JSON request's body as AWS reads it: size-limited (``RequestTooLarge``), chunked or not,
    JSON without NaN or Infinity, gzip inflated where botocore gzips it (``SerializationError``);
    with ``service`` and an ``operation`` of its model, read into the operation's input shape
    (``SerializationError`` for a value of the wrong JSON type) with its required members there
    (``ValidationError``). Read once per request: a second call returns the first one's result."""
    done = environ.get(_JSON)
    if done is None or (service and operation and not done[1]):
        params = done[0] if done is not None else _parse_json(environ, limit)
        checked = False
        if service and operation:
            from localaws.sagemaker import shapes  # noqa: PLC0415 - shapes imports this module

            if shapes.has_operation(service, operation):
                params = shapes.read_request(operation, params, service)
                shapes.check_request(operation, params, service, constraints=False)
                checked = True
        done = environ[_JSON] = (params, checked)
    return done[0]


_JSON = "localaws.json"


def _parse_json(environ: dict, limit: int):
    try:
        body = bodies.buffer(environ, limit)
    except bodies.BodyTooLarge as refused:
        raise RequestTooLarge(str(refused)) from None
    except bodies.MalformedBody as refused:
        raise SerializationError(str(refused)) from None
    try:
        return bodies.loads(_decoded(environ, body, limit) or b"{}")
    except bodies.NotJSON as refused:
        raise SerializationError(f"The request body is not valid JSON: {refused}") from None


def _form_value(environ: dict, name: str) -> str | None:
    """A query-protocol parameter (Action, Version) from the query string or a form body the
    caller has already buffered (``bodies.buffer``)."""
    found = parse_qs(environ.get("QUERY_STRING", "")).get(name)
    body = bodies.buffered(environ)
    if not found and body:
        found = parse_qs(body.decode("utf-8", "replace")).get(name)
    return found[0] if found else None


class MotoErrors:
    """moto's WSGI application, its every error in the service's own protocol (see the module)."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher  # moto's DomainDispatcherApplication
        #: How a request whose body is read (and checked) is handed to moto: ``localaws.state`` puts
        #: its gate here, so that no client's slow body holds a snapshot up.
        self.call = _call

    def __call__(self, environ, start_response):
        try:
            app = self.dispatcher.get_application(environ)  # as the dispatcher itself does, once
        except Exception:  # noqa: BLE001 - moto has no backend for what the request names
            protocol = request_protocol(environ, None)
            code = "InvalidAction" if protocol in ("query", "ec2") else "UnknownOperationException"
            return respond(
                environ,
                start_response,
                protocol,
                code,
                "localaws has no service for this request (its signature names a service moto does not have).",
                400,
            )
        service = botocore_name(getattr(app, "service", None))
        protocol = request_protocol(environ, service)
        try:
            self._buffer(environ, service, protocol)
        except AwsError as refused:
            return respond(environ, start_response, protocol, refused.code, refused.message, refused.status)
        answer = {}

        def capture(status, headers, exc_info=None):
            answer["status"], answer["headers"] = status, headers
            return lambda data: (_ for _ in ()).throw(RuntimeError("moto used write()"))

        try:
            chunks = self.call(app, environ, capture)
        except bodies.BodyTooLarge:  # an aws-chunked upload longer than it said (see _limit_s3)
            return respond(
                environ,
                start_response,
                protocol,
                "IncompleteBody",
                "The request body is longer than its x-amz-decoded-content-length says.",
                400,
            )
        except NotImplementedError as crash:
            operation = self._operation(environ, service) or "this operation"
            if not _has_operation(service, operation):  # not AWS's either
                code, message = _unknown_operation(protocol, environ, operation)
                return respond(environ, start_response, protocol, code, message, 400)
            return respond(
                environ,
                start_response,
                protocol,
                "NotImplemented",
                f"localaws does not implement {_service_title(service)} {operation} as asked (moto: {crash}).",
                501,
            )
        except OperationNotFoundError:  # an operation the service does not have at all
            code, message = _unknown_operation(protocol, environ, self._operation(environ, service))
            return respond(environ, start_response, protocol, code, message, 400)
        except (ExpatError, ParseError) as crash:  # moto's XML parsing of a malformed body
            return respond(
                environ,
                start_response,
                protocol,
                "MalformedXML",
                f"The XML you provided was not well-formed or did not validate against our published schema ({crash}).",
                400,
            )
        except Exception as crash:  # noqa: BLE001 - a crash of moto's is ours to answer, never HTML
            operation = self._operation(environ, service) or "request"
            log.exception("moto crashed on %s %s", service, operation)
            return respond(
                environ,
                start_response,
                protocol,
                "InternalFailure",
                f"localaws (moto) failed on {_service_title(service)} {operation}: {type(crash).__name__}: {crash}",
                500,
            )
        status = int(answer["status"].split(" ", 1)[0])
        content_type = dict((k.lower(), v) for k, v in answer["headers"]).get("content-type", "")
        if status >= 400 and environ.get("REQUEST_METHOD") != "HEAD" and content_type.startswith("text/html"):
            page = b"".join(chunks)
            if hasattr(chunks, "close"):
                chunks.close()
            if not page.strip() or page.lstrip()[:15].lower().startswith((b"<!doctype", b"<html")):
                operation = self._operation(environ, service)
                if status in (404, 405) and not operation:  # no operation of the service is asked
                    code, message = _unknown_operation(protocol, environ)
                    status = 400
                elif status in (404, 405):  # moto has no route for an operation AWS has
                    code, status = "NotImplemented", 501
                    message = (
                        f"localaws does not implement {_service_title(service)} {operation} (moto has no route for it)."
                    )
                else:
                    code = "InternalFailure" if status >= 500 else "InvalidRequest"
                    message = (
                        f"localaws (moto) answered {answer['status']} to {_service_title(service)} "
                        f"{operation or 'request'}."
                    )
                return respond(environ, start_response, protocol, code, message, status)
            chunks = [page]
        start_response(answer["status"], answer["headers"])
        return chunks

    @staticmethod
    def _buffer(environ: dict, service: str | None, protocol: str) -> None:
        """Read an API call's body whole, within its limit (so that its Action can be named in an error
        and moto is never left waiting on a client): for a JSON service, JSON as AWS reads it (moto's
        json takes NaN) and into the operation's shapes (moto takes any JSON type anywhere). S3's
        objects stream to moto, within S3's limits."""
        if service == "s3":
            return _limit_s3(environ)
        if protocol == "json":
            target = environ.get("HTTP_X_AMZ_TARGET", "")
            json_request(environ, MAX_API_BODY, service, target.rsplit(".", 1)[-1] if target else None)
            return
        if environ.get("CONTENT_TYPE", "").startswith("application/json"):  # rest-json: members are in the URI too
            json_request(environ, MAX_API_BODY)
            return
        try:
            bodies.buffer(environ, MAX_API_BODY)
        except bodies.BodyTooLarge as error:
            raise RequestTooLarge(str(error)) from None
        except bodies.MalformedBody as error:
            raise AwsError(str(error), "MalformedInput") from None

    @staticmethod
    def _operation(environ: dict, service: str | None) -> str | None:
        """The operation a request names, as botocore's model (through moto's router) reads it."""
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:
            return target.rsplit(".", 1)[-1]
        action = _form_value(environ, "Action")
        if action or not service:
            return action
        try:
            from moto.core.request import Request  # noqa: PLC0415
            from moto.core.routing import get_service_router  # noqa: PLC0415

            request = environ.get("werkzeug.request") or Request(environ)
            operation, _ = get_service_router(service).match(request)
            return operation.name
        except Exception:  # noqa: BLE001 - no operation of the model matches
            return None


def _call(app, environ, start_response):
    return app(environ, start_response)


def _limit_s3(environ: dict) -> None:
    """S3's limits on what streams to moto: a PUT of at most 5 GiB that says how long it is (S3
    answers ``MissingContentLength`` to a chunked one, unless it is aws-chunked with
    x-amz-decoded-content-length, which then limits it); a chunked body of another method (the
    XML of DeleteObjects, say) is read whole within the API limit."""
    length = environ.get("CONTENT_LENGTH") or ""
    if length:
        if length.isdigit() and int(length) > MAX_S3_BODY:
            environ[bodies.CLOSE_CONNECTION] = True
            raise AwsError("Your proposed upload exceeds the maximum allowed size", "EntityTooLarge")
        return
    if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return  # no body (the server's handler reads none without a length or chunked framing)
    decoded = environ.get("HTTP_X_AMZ_DECODED_CONTENT_LENGTH", "")
    if "aws-chunked" in environ.get("HTTP_CONTENT_ENCODING", "").lower() and decoded.isdigit():
        size = int(decoded)
        if size > MAX_S3_BODY:
            environ[bodies.CLOSE_CONNECTION] = True
            raise AwsError("Your proposed upload exceeds the maximum allowed size", "EntityTooLarge")
        environ["wsgi.input"] = _Capped(environ["wsgi.input"], size + size // 64 + _AWS_CHUNKED_SLACK, environ)
        return
    if environ.get("REQUEST_METHOD") == "PUT":
        environ[bodies.CLOSE_CONNECTION] = True
        raise AwsError("You must provide the Content-Length HTTP header.", "MissingContentLength", 411)
    try:
        bodies.buffer(environ, MAX_API_BODY)
    except bodies.BodyTooLarge:
        raise AwsError("Your request was too big.", "MaxMessageLengthExceeded") from None
    except bodies.MalformedBody as error:
        raise AwsError(str(error), "IncompleteBody") from None


class _Capped:
    """A request stream that refuses (``bodies.BodyTooLarge``) to yield more than ``cap`` bytes."""

    def __init__(self, stream, cap: int, environ: dict):
        self._stream, self._left, self._environ = stream, cap, environ

    def _take(self, data: bytes) -> bytes:
        self._left -= len(data)
        if self._left < 0:
            self._environ[bodies.CLOSE_CONNECTION] = True  # the rest is not read
            raise bodies.BodyTooLarge(0)
        return data

    def read(self, size: int = -1) -> bytes:
        return self._take(self._stream.read(self._left + 1 if size is None or size < 0 else min(size, self._left + 1)))

    def readline(self, size: int = -1) -> bytes:
        return self._take(
            self._stream.readline(self._left + 1 if size is None or size < 0 else min(size, self._left + 1))
        )


def _decoded(environ: dict, body: bytes, limit: int) -> bytes:
    """The body as moto will read it: botocore gzips large bodies of some operations (CloudWatch's
    PutMetricData); the JSON check reads the inflated body, at most ``limit`` of it."""
    if "gzip" not in environ.get("HTTP_CONTENT_ENCODING", "").lower():
        return body
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise SerializationError("The request body is not valid gzip.") from None
    if len(inflated) > limit or inflater.unconsumed_tail:
        raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
    return inflated


def _unknown_operation(protocol: str, environ: dict, operation: str | None = None) -> tuple[str, str]:
    """AWS's answer to an operation its service does not have."""
    where = operation or f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"
    if protocol in ("query", "ec2"):
        return "InvalidAction", f"The action {where} is not valid for this web service."
    return "UnknownOperationException", f"Unknown operation {where}."


@lru_cache(maxsize=None)
def botocore_name(moto_backend: str | None) -> str | None:
    """botocore's name of a moto backend ("awslambda" -> "lambda", "applicationautoscaling" -> ...)."""
    if not moto_backend or moto_backend in ("moto_api", "instance_metadata"):
        return None
    from moto.core.responses import boto3_service_name  # noqa: PLC0415
    from moto.core.utils import service_name_from_moto_package_name  # noqa: PLC0415

    return boto3_service_name.get(moto_backend) or service_name_from_moto_package_name(moto_backend)


@lru_cache(maxsize=4096)
def _has_operation(service: str | None, operation: str) -> bool:
    import botocore.session  # noqa: PLC0415

    try:
        return operation in botocore.session.get_session().get_service_model(service).operation_names
    except Exception:  # noqa: BLE001 - a service botocore does not know: say "not implemented"
        return True


@lru_cache(maxsize=None)
def _service_title(service: str | None) -> str:
    """The service as AWS names it (botocore's serviceId: "IAM", "S3", "CloudWatch Logs")."""
    import botocore.session  # noqa: PLC0415

    try:
        return botocore.session.get_session().get_service_model(service).metadata["serviceId"]
    except Exception:  # noqa: BLE001
        return service or "the service"
