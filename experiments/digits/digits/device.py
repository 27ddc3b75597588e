"""Picks the accelerator: CUDA if available, else a Habana Gaudi HPU, else the CPU.

On an HPU (lazy mode, the default of the Gaudi PyTorch bridge) the graph is
built up op by op and executed at ``mark_step``; ``Device.mark_step`` is a no-op
everywhere else, so the training loop calls it unconditionally after backward
and after the optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def _no_op() -> None:
    return None


@dataclass
class Device:
    torch_device: torch.device
    kind: str  # "cuda", "hpu" or "cpu"
    description: str
    mark_step: Callable[[], None] = _no_op

    @property
    def accumulate_dtype(self) -> torch.dtype:
        """For on-device sums of losses: float64, but Gaudi has no float64."""
        return torch.float32 if self.kind == "hpu" else torch.float64

    def rng_state(self) -> dict:
        state = {"cpu": torch.get_rng_state()}
        if self.kind == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.torch_device)
        return state

    def set_rng_state(self, state: dict) -> None:
        if state.get("cpu") is not None:
            torch.set_rng_state(state["cpu"].to("cpu", torch.uint8))
        if self.kind == "cuda" and state.get("cuda") is not None:
            torch.cuda.set_rng_state(state["cuda"].to("cpu", torch.uint8), self.torch_device)


def _habana():
    try:
        import habana_frameworks.torch.core as htcore  # noqa: F401, PLC0415  (registers the hpu device; Habana only)
    except Exception:  # noqa: BLE001 - ImportError, or a broken driver install: no hpu
        return None
    return htcore


def select(local_rank: int = 0) -> Device:
    if torch.cuda.is_available():
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        name = torch.cuda.get_device_name(index)
        return Device(
            torch.device("cuda", index), "cuda", f"cuda:{index} ({name}, {torch.cuda.device_count()} visible)"
        )
    htcore = _habana()
    if htcore is not None:
        count = ""
        try:
            import habana_frameworks.torch.hpu as hthpu  # noqa: PLC0415 - Habana only

            count = f" ({hthpu.device_count()} visible)"
        except Exception:  # noqa: BLE001 - the count is only for the log line
            pass
        return Device(torch.device("hpu"), "hpu", f"hpu (Habana Gaudi{count})", htcore.mark_step)
    threads = torch.get_num_threads()
    return Device(torch.device("cpu"), "cpu", f"cpu ({threads} threads)")
