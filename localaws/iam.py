"""What localaws adds to moto's IAM: AWS's managed policies, and IAM's policy simulator.

moto loads AWS managed policies (``AmazonSageMakerFullAccess``...) only when
``MOTO_IAM_LOAD_MANAGED_POLICIES=true`` when an account's IAM is first used: localaws
sets it unless the environment says otherwise. Start-up is unchanged; an account's first
IAM call takes about 1 s longer (50-100 ms without them) and the process grows by about
25 MB (measured here: 1582 policies). moto has no ``SimulatePrincipalPolicy`` nor ``SimulateCustomPolicy``,
which the SageMaker SDK calls to validate an execution role: they are answered here,
evaluating the principal's identity policies (inline and attached, its groups' for a
user, managed ones at their default version), the policies given in the request and
any permissions boundary, with IAM's logic: an explicit Deny wins, then an Allow,
else the implicit deny. Nothing else in localaws enforces IAM: the simulator says
what AWS would decide, no request is refused for it.

Conditions are evaluated against the request's ``ContextEntries`` for the string,
ARN, boolean and ``Null`` operators (``...IfExists`` too); a statement whose condition
needs a key the request does not give does not apply, and the key is reported in
``MissingContextValues``, as IAM reports it. Resource policies are not evaluated.
"""

from __future__ import annotations

import fnmatch
import os
import re
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote
from xml.etree.ElementTree import Element, SubElement, tostring

from localaws import aws_errors, bodies
from localaws.aws_errors import AwsError

OPERATIONS = ("SimulatePrincipalPolicy", "SimulateCustomPolicy")
XMLNS = "https://iam.amazonaws.com/doc/2010-05-08/"
_PRINCIPAL = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):(user|group|role)/(?:.*/)?([\w+=,.@-]+)$")


def load_managed_policies() -> None:
    """Have moto create each account's IAM with AWS's managed policies (the user may say ``false``)."""
    os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")


@dataclass
class Source:
    """One policy document and where it comes from, as IAM's simulator names it."""

    policy_id: str
    policy_type: str  # user, group, role, aws-managed, user-managed, none (the request's own)
    statements: list[dict]


@dataclass
class Decision:
    decision: str = "implicitDeny"
    matched: list[Source] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)


class Simulator:
    """Answers IAM's Simulate* operations (query protocol) from moto's IAM state."""

    def handle(self, environ: dict):
        """(status, headers, body) for SimulatePrincipalPolicy / SimulateCustomPolicy, and for any IAM
        request whose body cannot be read; None (the body read, for moto) for any other."""
        if not environ.get("CONTENT_TYPE", "").startswith(aws_errors.FORM) and "Action=" not in environ.get(
            "QUERY_STRING", ""
        ):
            return None
        try:  # the limit moto's wrapper would apply; a body refused part-way goes nowhere else
            body = bodies.buffer(environ, aws_errors.MAX_API_BODY)
        except bodies.BodyTooLarge as error:
            return aws_errors.answer(environ, "query", aws_errors.RequestTooLarge(str(error)))
        except bodies.MalformedBody as error:
            return aws_errors.error(environ, "query", "MalformedInput", str(error), 400)
        values = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()}
        values.update({k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()})
        operation = values.get("Action")
        if operation not in OPERATIONS:
            return None
        try:
            results, truncated, marker = self.simulate(operation, values)
        except AwsError as error:
            return aws_errors.answer(environ, "query", error)
        return 200, [("Content-Type", "text/xml")], _render(operation, results, truncated, marker)

    # --- the request ---------------------------------------------------------------------------

    def simulate(self, operation: str, values: dict) -> tuple[list[dict], bool, str | None]:
        actions = _members(values, "ActionNames")
        if not actions:
            raise AwsError(
                "1 validation error detected: Value null at 'actionNames' failed to satisfy "
                "constraint: Member must not be null",
                "ValidationError",
            )
        resources = _members(values, "ResourceArns") or ["*"]
        sources = [
            Source(f"PolicyInputList.{n}", "none", _statements(doc, f"PolicyInputList.{n}"))
            for n, doc in enumerate(_members(values, "PolicyInputList"), 1)
        ]
        boundaries = [
            Source(f"PermissionsBoundaryPolicyInputList.{n}", "none", _statements(doc, "boundary"))
            for n, doc in enumerate(_members(values, "PermissionsBoundaryPolicyInputList"), 1)
        ]
        if operation == "SimulatePrincipalPolicy":
            arn = values.get("PolicySourceArn") or ""
            principal, boundary = self._principal_policies(arn)
            sources = principal + sources
            if boundary and not boundaries:
                boundaries = [boundary]
        elif not sources:
            raise AwsError(
                "1 validation error detected: Value null at 'policyInputList' failed to satisfy "
                "constraint: Member must not be null",
                "ValidationError",
            )
        context = _context(values)
        results = []
        for action in actions:
            for resource in resources:
                results.append(_result(action, resource, sources, boundaries, context))
        start, size = _marker(values.get("Marker")), _max_items(values.get("MaxItems"))
        page = results[start : start + size]
        truncated = start + size < len(results)
        return page, truncated, str(start + size) if truncated else None

    def _principal_policies(self, arn: str) -> tuple[list[Source], Source | None]:
        from moto.iam.models import iam_backends  # noqa: PLC0415

        match = _PRINCIPAL.match(arn)
        if not match:
            raise AwsError(f"Invalid ARN: {arn!r} is not the ARN of an IAM user, group or role.", "InvalidInput")
        account, kind, name = match.groups()
        backend = iam_backends[account]["global"]
        try:
            entity = {"user": backend.get_user, "group": backend.get_group, "role": backend.get_role}[kind](name)
        except Exception:  # noqa: BLE001 - moto's NoSuchEntity
            raise AwsError(f"The {kind} with name {name} cannot be found.", "NoSuchEntity", 404) from None
        found = _own_policies(entity, kind)
        if kind == "user":
            for group in backend.get_groups_for_user(name):
                found.extend(_own_policies(group, "group"))
        boundary_arn = getattr(entity, "permissions_boundary_arn", None) or getattr(
            entity, "permissions_boundary", None
        )
        boundary = None
        if isinstance(boundary_arn, str) and boundary_arn:
            policy = backend.managed_policies.get(boundary_arn) or _aws_managed(backend, boundary_arn)
            if policy is not None:
                boundary = _managed_source(policy)
        return found, boundary


def _max_items(given: str | None) -> int:
    if given is None or given == "":
        return 100
    if not given.strip().lstrip("-").isdigit() or not 1 <= int(given) <= 1000:
        raise AwsError(
            f"1 validation error detected: Value '{given}' at 'maxItems' failed to satisfy constraint: "
            "Member must be an integer between 1 and 1000",
            "ValidationError",
        )
    return int(given)


def _marker(given: str | None) -> int:
    """Where a page starts: the Marker of the previous page (our own, a position)."""
    if given is None or given == "":
        return 0
    if not given.isdigit():
        raise AwsError(f"Invalid Marker {given!r}: pass the Marker of the previous page.", "InvalidInput")
    return int(given)


def _aws_managed(backend, arn: str):
    return next((p for p in getattr(backend, "aws_managed_policies", []) if p.arn == arn), None)


def _own_policies(entity, kind: str) -> list[Source]:
    found = [Source(name, kind, _statements(document, name)) for name, document in sorted(entity.policies.items())]
    found.extend(_managed_source(policy) for _, policy in sorted(entity.managed_policies.items()))
    return found


def _managed_source(policy) -> Source:
    version = next((v for v in policy.versions if v.is_default), policy.versions[-1])
    kind = "aws-managed" if ":aws:policy/" in policy.arn else "user-managed"
    return Source(policy.name, kind, _statements(version.document, policy.name))


def _members(values: dict, name: str) -> list[str]:
    found = []
    index = 1
    while f"{name}.member.{index}" in values:
        found.append(values[f"{name}.member.{index}"])
        index += 1
    return found


def _context(values: dict) -> dict[str, list[str]]:
    context = {}
    index = 1
    while f"ContextEntries.member.{index}.ContextKeyName" in values:
        key = values[f"ContextEntries.member.{index}.ContextKeyName"].lower()
        context[key] = _members(values, f"ContextEntries.member.{index}.ContextKeyValues")
        index += 1
    return context


def _statements(document, where: str) -> list[dict]:
    """A policy document's statements, refused (``InvalidInput``, as Simulate* answers) unless each is
    IAM's grammar: an Effect of Allow or Deny, actions and resources as strings or lists of them, a
    Condition of operators mapping keys to values."""
    if isinstance(document, dict):
        parsed = document
    else:
        text = document if document.lstrip().startswith("{") else unquote(document)
        try:
            parsed = bodies.loads(text)
        except bodies.NotJSON:
            raise _invalid(where, "is not valid JSON") from None
    statements = parsed.get("Statement") if isinstance(parsed, dict) else None
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise _invalid(where, "has no Statement")
    for statement in statements:
        _check_statement(statement, where)
    return statements


def _invalid(where: str, why: str) -> AwsError:
    return AwsError(f"The policy {where} is not a valid policy document: it {why}.", "InvalidInput")


def _strings(value) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _check_statement(statement, where: str) -> None:
    if not isinstance(statement, dict):
        raise _invalid(where, "has a statement that is not a JSON object")
    if statement.get("Effect") not in ("Allow", "Deny"):
        raise _invalid(where, f"has a statement whose Effect is {statement.get('Effect')!r}, not Allow or Deny")
    for name in ("Action", "NotAction", "Resource", "NotResource"):
        if name in statement and not _strings(statement[name]):
            raise _invalid(where, f"has a statement whose {name} is neither a string nor a list of strings")
    if not any(name in statement for name in ("Action", "NotAction")):
        raise _invalid(where, "has a statement with neither Action nor NotAction")
    conditions = statement.get("Condition", {})
    scalar = (str, bool, int, float)
    if not isinstance(conditions, dict) or not all(
        isinstance(tests, dict)
        and all(
            isinstance(v, scalar) or (isinstance(v, list) and all(isinstance(item, scalar) for item in v))
            for v in tests.values()
        )
        for tests in conditions.values()
    ):
        raise _invalid(where, "has a Condition that is not operators mapping keys to values")


# --- IAM's evaluation -----------------------------------------------------------------------------


def _listed(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _matches(patterns, value: str, ignore_case: bool) -> bool:
    """IAM's wildcards: * any run of characters, ? any one; nothing else is special."""
    for pattern in _listed(patterns):
        if ignore_case:
            pattern, candidate = pattern.lower(), value.lower()
        else:
            candidate = value
        if fnmatch.fnmatchcase(candidate, pattern.replace("[", "[[]")):
            return True
    return False


def _applies(statement: dict, action: str, resource: str, context: dict, missing: set[str]) -> bool:
    if "Action" in statement and not _matches(statement["Action"], action, True):
        return False
    if "NotAction" in statement and _matches(statement["NotAction"], action, True):
        return False
    if "Resource" in statement and not _matches(statement["Resource"], resource, False):
        return False
    if "NotResource" in statement and _matches(statement["NotResource"], resource, False):
        return False
    return _conditions_hold(statement.get("Condition") or {}, context, missing)


_STRING_TESTS = {
    "StringEquals": lambda want, got: got == want,
    "StringNotEquals": lambda want, got: got != want,
    "StringEqualsIgnoreCase": lambda want, got: got.lower() == want.lower(),
    "StringNotEqualsIgnoreCase": lambda want, got: got.lower() != want.lower(),
    "StringLike": lambda want, got: _matches(want, got, False),
    "StringNotLike": lambda want, got: not _matches(want, got, False),
    "ArnEquals": lambda want, got: got == want,
    "ArnNotEquals": lambda want, got: got != want,
    "ArnLike": lambda want, got: _matches(want, got, False),
    "ArnNotLike": lambda want, got: not _matches(want, got, False),
    "Bool": lambda want, got: got.lower() == str(want).lower(),
}
_NEGATED = ("StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "ArnNotEquals", "ArnNotLike")


def _conditions_hold(conditions: dict, context: dict, missing: set[str]) -> bool:
    for operator, tests in conditions.items():
        if not isinstance(tests, dict):
            return False
        if_exists = operator.endswith("IfExists")
        name = operator[: -len("IfExists")] if if_exists else operator
        for key, wanted in tests.items():
            got = context.get(key.lower())
            if name == "Null":
                if (got is None) != (str(wanted).lower() == "true"):
                    return False
                continue
            test = _STRING_TESTS.get(name)
            if test is None:  # numeric, date, IP, binary operators: not evaluated here
                missing.add(key)
                return False
            if got is None:
                if if_exists:
                    continue
                missing.add(key)
                return False
            wanted = [str(w) for w in _listed(wanted)]
            if name in _NEGATED:  # every value of the key differs from every wanted value
                if not all(test(w, g) for w in wanted for g in got):
                    return False
            elif not any(test(w, g) for w in wanted for g in got):
                return False
    return True


def _decide(sources: list[Source], action: str, resource: str, context: dict) -> Decision:
    decision = Decision()
    allows: list[Source] = []
    denies: list[Source] = []
    for source in sources:
        for statement in source.statements:
            if _applies(statement, action, resource, context, decision.missing):
                (denies if statement.get("Effect") == "Deny" else allows).append(source)
    if denies:
        decision.decision, decision.matched = "explicitDeny", denies
    elif allows:
        decision.decision, decision.matched = "allowed", allows
    return decision


def _result(action: str, resource: str, sources, boundaries, context) -> dict:
    identity = _decide(sources, action, resource, context)
    result: dict[str, object] = {
        "EvalActionName": action,
        "EvalResourceName": resource,
        "EvalDecision": identity.decision,
        "MatchedStatements": identity.matched,
        "MissingContextValues": sorted(identity.missing),
    }
    if boundaries:
        bound = _decide(boundaries, action, resource, context)
        allowed = bound.decision == "allowed"
        result["PermissionsBoundaryDecisionDetail"] = allowed
        result["MissingContextValues"] = sorted(identity.missing | bound.missing)
        if bound.decision == "explicitDeny":  # an explicit deny wins, whichever policy says it
            if identity.decision != "explicitDeny":
                result["EvalDecision"], result["MatchedStatements"] = "explicitDeny", bound.matched
        elif identity.decision == "allowed" and not allowed:
            result["EvalDecision"] = "implicitDeny"
    return result


# --- the answer -----------------------------------------------------------------------------------


def _render(operation: str, results: list[dict], truncated: bool, marker: str | None) -> bytes:
    root = Element(f"{operation}Response", xmlns=XMLNS)
    body = SubElement(root, f"{operation}Result")
    listing = SubElement(body, "EvaluationResults")
    for result in results:
        member = SubElement(listing, "member")
        for name in ("EvalActionName", "EvalResourceName", "EvalDecision"):
            SubElement(member, name).text = result[name]
        matched = SubElement(member, "MatchedStatements")
        for source in result["MatchedStatements"]:
            statement = SubElement(matched, "member")
            SubElement(statement, "SourcePolicyId").text = source.policy_id
            SubElement(statement, "SourcePolicyType").text = source.policy_type
        missing = SubElement(member, "MissingContextValues")
        for key in result["MissingContextValues"]:
            SubElement(missing, "member").text = key
        if "PermissionsBoundaryDecisionDetail" in result:
            detail = SubElement(member, "PermissionsBoundaryDecisionDetail")
            SubElement(detail, "AllowedByPermissionsBoundary").text = str(
                result["PermissionsBoundaryDecisionDetail"]
            ).lower()
    SubElement(body, "IsTruncated").text = str(truncated).lower()
    if marker:
        SubElement(body, "Marker").text = marker
    metadata = SubElement(root, "ResponseMetadata")
    SubElement(metadata, "RequestId").text = str(uuid.uuid4())
    return tostring(root, encoding="utf-8")
