"""The List* calls' common filters, sorting and pagination, as SageMaker does them."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from localaws.sagemaker.errors import ValidationError


def _encode(offset: int, total_filter: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([offset, total_filter]).encode()).decode()


def _decode(token: str, total_filter: str) -> int:
    try:
        offset, fingerprint = json.loads(base64.urlsafe_b64decode(token.encode()))
    except Exception:  # noqa: BLE001 - any garbage is the same error to the caller
        raise ValidationError("Invalid pagination token.") from None
    if fingerprint != total_filter:
        raise ValidationError("The pagination token does not match the request's filters.")
    return int(offset)


def page(
    items: list[dict],
    params: dict,
    *,
    name_key: str,
    status_key: str | None,
    sort_keys: dict[str, str],
    default_sort: str = "CreationTime",
    default_order: str = "Ascending",
    max_results_default: int = 10,
) -> tuple[list[dict], str | None]:
    """Filter, sort and cut ``items`` by the request's List* parameters."""
    selected = []
    for item in items:
        if params.get("NameContains") and params["NameContains"].lower() not in item[name_key].lower():
            continue
        if status_key and params.get("StatusEquals") and item.get(status_key) != params["StatusEquals"]:
            continue
        if not _within(item.get("CreationTime"), params.get("CreationTimeAfter"), params.get("CreationTimeBefore")):
            continue
        if not _within(
            item.get("LastModifiedTime"), params.get("LastModifiedTimeAfter"), params.get("LastModifiedTimeBefore")
        ):
            continue
        selected.append(item)
    sort_by = params.get("SortBy") or default_sort
    key = sort_keys.get(sort_by, sort_keys[default_sort])
    order = params.get("SortOrder") or default_order
    selected.sort(key=lambda item: (item.get(key) or 0, item[name_key]), reverse=order == "Descending")

    fingerprint = json.dumps({k: v for k, v in params.items() if k not in ("NextToken", "MaxResults")}, default=str)
    start = _decode(params["NextToken"], fingerprint) if params.get("NextToken") else 0
    size = params.get("MaxResults") or max_results_default
    chunk = selected[start : start + size]
    token = _encode(start + size, fingerprint) if start + size < len(selected) else None
    return chunk, token


def _within(value, after, before) -> bool:
    if value is None:
        return after is None and before is None
    if after is not None and value <= _epoch(after):
        return False
    if before is not None and value >= _epoch(before):
        return False
    return True


def _epoch(value) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
