"""Multi-host data parallelism over torch.distributed's gloo backend.

Only used when SageMaker gives the job more than one host: rank = index of the
current host in SM_HOSTS, world size = number of hosts, rendezvous at
``tcp://$SM_MASTER_ADDR:$SM_MASTER_PORT`` (defaults: the first host, port 7777).
Gradients are averaged by one all-reduce of a flat buffer per step, which also
carries a stop flag so that every host abandons the same step when any of them
receives SIGTERM. The buffer goes through the CPU, so the same code serves CUDA
and HPU tensors with gloo.

A single-host job gets ``Single``, which never imports torch.distributed.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta
from typing import Any, Iterable, Sequence

import torch

from .errors import TrainingError

#: Seconds to wait for the other hosts (rendezvous and each collective).
TIMEOUT_ENV = "DIGITS_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 600
#: Seconds to wait for the master's name to resolve (SageMaker's algo-N names resolve at once).
RESOLVE_WAIT_S = 60


def wait_for_name(host: str, wait_s: float = RESOLVE_WAIT_S) -> None:
    """Fails clearly, instead of hanging in the rendezvous, when ``host`` never resolves."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            socket.getaddrinfo(host, None)
            return
        except socket.gaierror as error:
            if time.monotonic() >= deadline:
                raise TrainingError(
                    f"the master host {host!r} does not resolve ({error}); set SM_MASTER_ADDR "
                    f"(default: the first of SM_HOSTS)"
                ) from None
            time.sleep(1)


class Single:
    rank = 0
    world_size = 1
    is_main = True

    def sync_gradients(self, parameters: Sequence[torch.nn.Parameter], stop: bool) -> bool:
        return stop

    def sum(self, values: Iterable[float]) -> list:
        return [float(value) for value in values]

    def max(self, values: Iterable[float]) -> list:
        return [float(value) for value in values]

    def broadcast_object(self, obj: Any) -> Any:
        return obj

    def broadcast_module(self, module: torch.nn.Module) -> None:
        return None

    def close(self) -> None:
        return None


class Gloo:
    is_main = False

    def __init__(self, master_addr: str, master_port: int, rank: int, world_size: int):
        import torch.distributed as dist  # noqa: PLC0415 - only a multi-host job loads it (see above)

        self.dist = dist
        self.rank = rank
        self.world_size = world_size
        self.is_main = rank == 0
        if master_addr in ("127.0.0.1", "localhost", "::1") and "GLOO_SOCKET_IFNAME" not in os.environ:
            # all hosts on one machine (a process runner): keep gloo on the loopback interface
            os.environ["GLOO_SOCKET_IFNAME"] = "lo"
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S))
        wait_for_name(master_addr, min(RESOLVE_WAIT_S, timeout.total_seconds()))
        dist.init_process_group(
            backend="gloo",
            init_method=f"tcp://{master_addr}:{master_port}",
            rank=rank,
            world_size=world_size,
            timeout=timeout,
        )

    def _all_reduce(self, tensor: torch.Tensor, op) -> torch.Tensor:
        self.dist.all_reduce(tensor, op=op)
        return tensor

    def sync_gradients(self, parameters: Sequence[torch.nn.Parameter], stop: bool) -> bool:
        """Averages the gradients over the hosts; True if any host asked to stop."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat(
            [g.detach().reshape(-1).to("cpu", torch.float32) for g in grads] + [torch.tensor([1.0 if stop else 0.0])]
        )
        self._all_reduce(flat, self.dist.ReduceOp.SUM)
        if flat[-1].item() > 0:
            return True
        flat = flat[:-1] / self.world_size
        offset = 0
        for parameter, grad in zip(parameters, grads, strict=True):
            count = grad.numel()
            parameter.grad = flat[offset : offset + count].view_as(grad).to(grad.device, grad.dtype)
            offset += count
        return False

    def sum(self, values: Iterable[float]) -> list:
        tensor = torch.tensor([float(value) for value in values], dtype=torch.float64)
        return self._all_reduce(tensor, self.dist.ReduceOp.SUM).tolist()

    def max(self, values: Iterable[float]) -> list:
        tensor = torch.tensor([float(value) for value in values], dtype=torch.float64)
        return self._all_reduce(tensor, self.dist.ReduceOp.MAX).tolist()

    def broadcast_object(self, obj: Any) -> Any:
        holder = [obj if self.is_main else None]
        self.dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Makes every host start from rank 0's parameters and buffers."""
        for tensor in list(module.parameters()) + list(module.buffers()):
            cpu = tensor.detach().to("cpu").clone()
            self.dist.broadcast(cpu, src=0)
            with torch.no_grad():
                tensor.copy_(cpu.to(tensor.device))

    def close(self) -> None:
        try:
            self.dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - closing after a failed peer: nothing left to tear down
            pass


def init(hosts: list, current_host: str, master_addr: str, master_port: int):
    if len(hosts) <= 1:
        return Single()
    return Gloo(master_addr, master_port, hosts.index(current_host), len(hosts))
