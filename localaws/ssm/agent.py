"""localaws as the SSM agent of the run's host: Run Command for the project's documents, for real.

Split as moto splits a service: the commands and their invocations (``models.py``), SSM's protocol for
them (``responses.py``), and what runs on the stand-in host (``commands.py``: the document's own script,
its ``docker`` served by localaws's runner in ``dockerd.py``). ``SsmAgent`` wires them for the gateway
and for snapshots (``localaws/state``).
"""

from __future__ import annotations

from localaws.ssm.commands import HostCommands
from localaws.ssm.models import Commands
from localaws.ssm.responses import SsmResponses, moto_backend


class SsmAgent:
    def __init__(self, settings, clients, runners, moto_ssm_backend=None):
        """``runners(image) -> Runner`` as for training jobs; ``moto_ssm_backend(region)`` gives moto's
        backend (for ListCommands, which merges moto's commands with ours)."""
        self.store = Commands()
        self.host = HostCommands(settings, clients, runners, self.store)
        self.responses = SsmResponses(
            settings, clients, self.store, self.host, moto_ssm_backend or moto_backend(settings.account_id)
        )
        self.lock = self.store.lock
        self.commands = self.store.commands

    def handle(self, environ: dict, target: str, region: str | None):
        """(status, headers, body) when the request is ours; None (its body read, for moto) otherwise."""
        return self.responses.handle(environ, target, region)

    def shutdown(self) -> None:
        self.host.shutdown()

    def state(self) -> dict:
        return self.store.state()

    def restore(self, state: dict, stopped_at: float) -> list[str]:
        return self.store.restore(state, stopped_at)
