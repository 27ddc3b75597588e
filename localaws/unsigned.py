"""Unsigned requests, refused when localaws listens beyond the loopback interface.

localaws checks no signature: any ``Authorization`` header is taken as it comes. On
127.0.0.1 only this machine's own programs reach it, which is how it is meant to run.
Bound to another address (``LOCALAWS_HOST=0.0.0.0``, as in docker-compose, where other
containers call it), a request that carries no credentials at all (no ``Authorization``
header, no presigned URL's query authentication) is refused as AWS refuses it, in the
service's own protocol: S3's ``AccessDenied``, everyone else's ``MissingAuthenticationToken``.
That keeps a browser, a stray curl or an unsigned script from driving it by accident; it
is not authentication (a made-up signature passes). localaws's admin API is held to the
same rule (``localaws.client`` signs its calls), except ``GET /_localaws/health``.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from urllib.parse import parse_qs

from localaws import aws_errors, bodies

_PRESIGNED = (("X-Amz-Signature",), ("X-Amz-Credential",), ("Signature", "AWSAccessKeyId"))
_MESSAGE = "Request is missing Authentication Token"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is reachable from this machine only."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        # An IPv4 or IPv6 address's first item is its host, a str (an int only in families not asked for here).
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None) if isinstance(info[4][0], str)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def carries_credentials(environ: dict) -> bool:
    if environ.get("HTTP_AUTHORIZATION"):
        return True
    query = parse_qs(environ.get("QUERY_STRING", ""))
    return any(all(name in query for name in names) for names in _PRESIGNED)


class RequireCredentials:
    """Wraps the gateway: a request with no credentials at all gets AWS's refusal (see the module)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if carries_credentials(environ) or (path == "/_localaws/health" and environ.get("REQUEST_METHOD") == "GET"):
            return self.app(environ, start_response)
        environ[bodies.CLOSE_CONNECTION] = True  # its body is not read
        if path.startswith("/_localaws/"):
            body = json.dumps({"__type": "MissingAuthenticationToken", "message": _MESSAGE}).encode()
            start_response("403 Forbidden", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if path.startswith("/endpoints/"):  # sagemaker-runtime
            protocol = "rest-json"
        else:
            if environ.get("CONTENT_TYPE", "").startswith(aws_errors.FORM):
                try:  # EC2 or another query service: the form's Version tells
                    bodies.buffer(environ, 65536)
                except (bodies.BodyTooLarge, bodies.MalformedBody):
                    pass  # the connection closes after the answer
            protocol = aws_errors.request_protocol(environ, None)
        if protocol == "rest-xml":
            return aws_errors.respond(environ, start_response, protocol, "AccessDenied", "Access Denied", 403)
        code = "MissingAuthenticationToken" if protocol in ("query", "ec2") else "MissingAuthenticationTokenException"
        return aws_errors.respond(environ, start_response, protocol, code, _MESSAGE, 403)
