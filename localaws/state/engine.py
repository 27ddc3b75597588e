"""Our engine's state: what each part persists (its ``state()``) and how it comes back (``restore``).

Each part is pickled under its own lock, so a snapshot never waits on two of them at once; the
restore runs at start-up, before the first request, in the order the parts refer to each other
(training jobs before the tuning jobs that own them, endpoints before their scaling targets;
processing jobs stand alone).
"""

from __future__ import annotations

import pickle

from localaws.state import pickling

FORMAT = 1


def dump(gateway) -> dict[str, bytes]:
    """Each part's pickle (compared with the last snapshot's to see whether anything changed)."""
    sagemaker, autoscaling = gateway.sagemaker, gateway.autoscaling
    return {
        # One lock: shared by training, tuning, hosting's resources and the registry.
        "sagemaker": _pickled(
            sagemaker.lock,
            lambda: {
                "training": sagemaker.state(),
                "tuning": gateway.tuning.state(),
                "hosting": gateway.hosting.state(),
                "registry": gateway.registry.state(),
                "processing": gateway.processing.state(),
                "transform": gateway.transform.state(),
            },
        ),
        "autoscaling": _pickled(autoscaling.lock, autoscaling.state),
        "ssm": _pickled(gateway.ssm.lock, gateway.ssm.state),
    }


def _pickled(lock, state, attempts: int = 3) -> bytes:
    while True:
        attempts -= 1
        with lock:
            try:
                return pickling.dumps(state())
            except RuntimeError:  # a job's log thread added a metric (say) as it was pickled: again
                if attempts == 0:
                    raise


def active(gateway) -> bool:
    """Whether something of the engine's runs, and so may change its records without a request."""
    sagemaker, hosting, autoscaling = gateway.sagemaker, gateway.hosting, gateway.autoscaling
    with sagemaker.lock:
        if any(not job.done for job in sagemaker.training_jobs.values()):
            return True
        if any(not job.done for job in gateway.tuning.jobs.values()):
            return True
        if any(not job.done for job in gateway.processing.jobs.values()):
            return True
        if any(not job.done for job in gateway.transform.jobs.values()):
            return True
        if any(endpoint.status not in ("InService", "Failed") for endpoint in hosting.endpoints.values()):
            return True
    with autoscaling.lock:
        if any(target.scaling for target in autoscaling.targets.values()):
            return True
    with gateway.ssm.lock:
        return any(not invocation.done for invocations in gateway.ssm.commands.values() for invocation in invocations)


def encode(parts: dict[str, bytes], saved_at: float) -> bytes:
    return pickle.dumps({"format": FORMAT, "saved_at": saved_at, "parts": parts}, protocol=pickle.HIGHEST_PROTOCOL)


def saved_at(data: bytes) -> float | None:
    return pickle.loads(data).get("saved_at")


def restore(gateway, data: bytes, stopped_at: float) -> dict:
    """Put a snapshot back into the gateway's parts; what came back, for the log."""
    payload = pickle.loads(data)
    if payload.get("format") != FORMAT:
        raise ValueError(f"engine snapshot format {payload.get('format')}, this localaws reads {FORMAT}")
    parts = {name: pickling.loads(blob) for name, blob in payload["parts"].items()}
    sagemaker = parts.get("sagemaker", {})
    summary = {
        "training jobs interrupted": gateway.sagemaker.restore(sagemaker.get("training", {}), stopped_at),
        "tuning jobs interrupted": gateway.tuning.restore(sagemaker.get("tuning", {}), stopped_at),
    }
    gateway.registry.restore(sagemaker.get("registry", {}))
    summary["processing jobs interrupted"] = gateway.processing.restore(sagemaker.get("processing", {}), stopped_at)
    summary["transform jobs interrupted"] = gateway.transform.restore(sagemaker.get("transform", {}), stopped_at)
    summary["endpoints"] = gateway.hosting.restore(sagemaker.get("hosting", {}))
    summary["scalable targets"] = gateway.autoscaling.restore(parts.get("autoscaling", {}), stopped_at)
    summary["SSM commands interrupted"] = gateway.ssm.restore(parts.get("ssm", {}), stopped_at)
    summary["training jobs"] = len(gateway.sagemaker.training_jobs)
    return summary
