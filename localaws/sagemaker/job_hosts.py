"""The hosts of a training or processing job (``algo-1``, ``algo-2`` ...), once for both: each one's
container or process started with its log stream and its usage figures, the hosts supervised together
as SageMaker supervises them (one failing stops the others; a stop or a time limit sends SIGTERM,
then SIGKILL once the grace period has passed), and released at the end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from localaws.sagemaker import usage
from localaws.sagemaker.cloudwatch import HostLog, MetricParser
from localaws.sagemaker.contract import Layout
from localaws.sagemaker.runners.base import ContainerSpec, Running, Runner
from localaws.sagemaker.runners.hosts import Host

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.2


@dataclass
class HostRun:
    host: str
    layout: Layout  # on this machine
    process: Host
    log: HostLog
    sampler: usage.UsageSampler

    def close(self) -> None:
        self.sampler.close()  # its last sample, while the host can still be read
        self.process.close()
        self.log.close()


def start_host(
    runner: Runner,
    spec: ContainerSpec,
    layout: Layout,
    *,
    clients,
    settings,
    job_name: str,
    log_group: str,
    namespace: str,
    metrics: MetricParser | None = None,
) -> HostRun:
    """``spec`` started (the runner's ImageNotFound, EnvironmentBuildError... pass through), its lines
    going to its log stream ``<job>/<host>-<epoch>`` in ``log_group``, its figures to ``namespace``."""
    running = runner.start(spec)
    host_log = HostLog(clients, job_name, spec.host_name, settings.log_flush_seconds, metrics, group=log_group)
    sampler = usage.training_host(
        clients,
        job_name,
        spec.host_name,
        running,
        layout.root,
        spec.devices,
        settings.usage_metrics_seconds,
        namespace=namespace,
    )
    return HostRun(spec.host_name, layout, Host(running, host_log.write, spec.name), host_log, sampler)


def release(runs: list[HostRun]) -> None:
    """Each host stopped and its log and figures shipped. Removing a container takes the engine a
    moment the job need not wait for (AWS bills no teardown either); the runner's close() still removes
    whatever is left at shutdown."""
    for run in runs:
        run.close()
    threading.Thread(target=_remove_all, args=([run.process.running for run in runs],), daemon=True).start()


def _remove_all(running: list[Running]) -> None:
    for one in running:
        try:
            one.remove()
        except Exception:  # noqa: BLE001 - already gone, or the engine is shutting down
            log.debug("could not remove %s", one, exc_info=True)


def supervise(
    runs: list[HostRun],
    grace_seconds: float,
    should_stop: Callable[[], bool],
    tick: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Wait for every host to exit; returns their exit codes.

    One host exiting non-zero ends the job: the others get SIGTERM, as they do once ``should_stop()``
    (asked every poll until then: a stop, a time limit) says so; SIGKILL follows ``grace_seconds`` after.
    ``tick()`` runs every poll (checkpoint syncs, continuous uploads)."""
    codes: dict[str, int] = {}
    stopping_sent = False  # SIGTERM went to every host: now only the grace period counts
    while True:
        for run in runs:
            if run.host not in codes:
                code = run.process.poll()
                if code is not None:
                    codes[run.host] = code
                    if code != 0 and not stopping_sent:
                        for other in runs:
                            other.process.terminate()
                        stopping_sent = True
        if len(codes) == len(runs):
            break
        if not stopping_sent:
            if should_stop():
                for run in runs:
                    run.process.terminate()  # SIGTERM: the container may save what it has
                stopping_sent = True
        else:
            for run in runs:
                run.process.kill_after(grace_seconds)
        if tick is not None:
            tick()
        # A host's wait returns as it exits: the job goes on at once, not at the next poll.
        next(run for run in runs if run.host not in codes).process.wait(_POLL_SECONDS)
    for run in runs:
        run.process.reader.join(timeout=10)
    return codes
