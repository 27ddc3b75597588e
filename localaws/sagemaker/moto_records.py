"""The SageMaker records moto keeps (AutoML jobs, experiments, trials and trial components), as our
engine reaches them: in the region the request is signed for (as moto's own calls find them; the
engine's account), in moto's own objects, so that
they are persisted with moto's state (``localaws.state``) and answered by moto's other calls
(``ListTrials``, ``AddTags`` of an AutoML job, ``Search``).

Whatever writes them runs in moto's gate (see ``SageMakerResponses``): a snapshot never catches it
half-way, and the request marks moto's state to be saved.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from localaws.settings import Settings

#: The region of the request being answered (None: the engine's own).
_REGION: contextvars.ContextVar[str | None] = contextvars.ContextVar("localaws_moto_region", default=None)


@contextlib.contextmanager
def request_region(region: str | None) -> Iterator[None]:
    """Within it, ``backend`` is the region's a request is signed for."""
    token = _REGION.set(region)
    try:
        yield
    finally:
        _REGION.reset(token)


def backend(settings: Settings) -> Any:
    """moto's SageMaker backend of the engine's account, in the request's region (made on first use)."""
    from moto.sagemaker.models import sagemaker_backends  # noqa: PLC0415 - moto's models load with the gateway

    return sagemaker_backends[settings.account_id][_REGION.get() or settings.region]


def epoch(moment: datetime | None) -> float | None:
    """A moto timestamp (a naive UTC datetime) as the epoch seconds our answers carry."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def moment(seconds: float) -> datetime:
    """Epoch seconds as moto keeps a timestamp (naive UTC)."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(tzinfo=None)
