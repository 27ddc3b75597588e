"""The training loop: epochs, validation, early stopping, checkpoints, SIGTERM, outputs.

Log lines (stdout, flushed; metric lines come from rank 0 only):

    epoch=3 train_loss=0.123456 validation_loss=0.234567 validation_accuracy=0.954321
    ...
    best_epoch=2 train_loss=0.140000 validation_loss=0.210000 validation_accuracy=0.962963

The last line repeats the best epoch's metrics in the same ``key=value`` form, so
the last value of each metric in the log is the saved model's.

Early stopping: ``early_stopping_patience`` = N > 0 stops training once the
validation loss has been above the best value so far for N epochs in a row; the
model saved is the best epoch's (lowest validation loss). 0 disables it.

Checkpoints: after every epoch rank 0 writes ``<checkpoint dir>/checkpoint.pt``
(temp file, then rename) with the epoch, model and optimizer state, the best
state and loss, the epochs-since-best counter, the history and the RNG state.
A run that finds one resumes at the next epoch. Each epoch's shuffling and
dropout are seeded from (seed, epoch, rank), so a resumed run follows the same
path as an uninterrupted one.

SIGTERM: the current epoch is abandoned before its next batch, the checkpoint of
the last finished epoch stays (it is rewritten to be sure), the best model so far
goes to the model dir, and the process exits 0.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import checkpoint as checkpoints, data, device as devices, distributed, model as models
from .errors import CheckpointError, DataError, TrainingError
from .hyperparameters import Hyperparameters, parse
from .paths import Paths

EVAL_BATCH = 4096


class _NeverStop:
    def __bool__(self) -> bool:
        return False


def metric_line(prefix: str, value: int, metrics: dict) -> str:
    return (
        f"{prefix}={value} train_loss={metrics['train_loss']:.6f} "
        f"validation_loss={metrics['validation_loss']:.6f} "
        f"validation_accuracy={metrics['validation_accuracy']:.6f}"
    )


class Logger:
    def __init__(self, rank: int, host: str):
        self.rank = rank
        self.prefix = "" if rank == 0 else f"[{host}] "

    def __call__(self, message: str, *, all_ranks: bool = False) -> None:
        if self.rank == 0 or all_ranks:
            print(f"{self.prefix}{message}", flush=True)


def _cpu_state(module: torch.nn.Module) -> dict:
    return {key: value.detach().to("cpu").clone() for key, value in module.state_dict().items()}


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _batches(count: int, batch_size: int, steps: int, generator: torch.Generator):
    """``steps`` batches of row indices, reshuffled per epoch. Every host takes the same
    number of steps (the largest host's batch count); a host with fewer rows wraps around."""
    order = torch.randperm(count, generator=generator)
    for step in range(steps):
        start = step * batch_size
        if start < count:
            yield order[start : start + batch_size]
        else:
            yield order[torch.arange(start, start + batch_size) % count]


def _evaluate(net, features, labels, group, device) -> tuple:
    """(mean loss, accuracy) over every host's validation rows."""
    net.eval()
    dtype = device.accumulate_dtype
    loss_sum = torch.zeros((), dtype=dtype, device=device.torch_device)
    correct = torch.zeros((), dtype=dtype, device=device.torch_device)
    with torch.no_grad():
        for start in range(0, labels.shape[0], EVAL_BATCH):
            logits = net(features[start : start + EVAL_BATCH])
            target = labels[start : start + EVAL_BATCH]
            loss_sum += F.cross_entropy(logits, target, reduction="sum").to(dtype)
            correct += (logits.argmax(dim=1) == target).sum().to(dtype)
            device.mark_step()
    total_loss, total_correct, total = group.sum([loss_sum.item(), correct.item(), labels.shape[0]])
    return total_loss / total, total_correct / total


def _make_optimizer(hps: Hyperparameters, parameters):
    if hps.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=hps.learning_rate, weight_decay=hps.weight_decay)
    return torch.optim.SGD(parameters, lr=hps.learning_rate, momentum=hps.momentum, weight_decay=hps.weight_decay)


def _shard(dataset: data.Dataset, rank: int, world: int) -> data.Dataset:
    rows = slice(rank, None, world)
    return data.Dataset(dataset.features[rows], dataset.labels[rows], dataset.files)


def train(paths: Paths, hps: Hyperparameters | None = None, stop=None, started: float | None = None) -> dict:
    """Runs the job; returns the summary written to metrics.json. ``stop`` is truthy
    once SIGTERM has arrived."""
    started = started or time.time()
    hps = hps or parse(paths.raw_hyperparameters)
    stop = stop if stop is not None else _NeverStop()
    rank, world = paths.rank, paths.world_size
    log = Logger(rank, paths.current_host)
    log(
        f"digits training: host {paths.current_host} (rank {rank} of {world}), "
        f"torch {torch.__version__}, python {sys.version.split()[0]}",
        all_ranks=True,
    )

    log("hyperparameters: " + " ".join(f"{k}={v}" for k, v in hps.as_dict().items() if v is not None))
    if hps.num_threads:
        torch.set_num_threads(hps.num_threads)  # a small model trains faster on 1-2 threads
    device = devices.select()
    log(f"device: {device.description}", all_ranks=True)

    # Data first, so that a bad channel fails before waiting for the other hosts.
    train_set = data.read_channel("train", paths.channel_dir("train"))
    validation_set = data.read_channel("validation", paths.channel_dir("validation"), allow_empty=world > 1)
    if world > 1 and paths.distribution("train") == "FullyReplicated":
        train_set = _shard(train_set, rank, world)  # every host got every file: split the rows
        if len(train_set) == 0:
            raise DataError(f"host {paths.current_host} has no training rows after sharding")
    log(
        f"data: train {len(train_set)} rows from {len(train_set.files)} file(s), "
        f"validation {len(validation_set)} rows from {len(validation_set.files)} file(s)",
        all_ranks=world > 1,
    )

    group = distributed.init(paths.hosts, paths.current_host, paths.master_addr, paths.master_port)
    try:
        return _train(paths, hps, device, group, log, train_set, validation_set, stop, started)
    finally:
        group.close()


def _train(paths, hps, device, group, log, train_set, validation_set, stop, started) -> dict:  # noqa: C901 - the epoch loop, read in one piece
    rank, world = group.rank, group.world_size
    if world > 1:
        log(f"distributed: gloo, rank {rank} of {world}, master {paths.master_addr}:{paths.master_port}")

    # Shapes every host agrees on.
    local_val_size = validation_set.input_size if len(validation_set) else 0
    max_label = max(int(train_set.labels.max()), int(validation_set.labels.max()) if len(validation_set) else 0)
    sizes = group.max([train_set.input_size, -train_set.input_size, max_label, len(train_set), len(validation_set)])
    input_size, num_classes = int(sizes[0]), int(sizes[2]) + 1
    if -int(sizes[1]) != input_size or local_val_size not in (0, input_size):
        raise DataError(
            f"train and validation rows differ in width across files or hosts "
            f"(expected {input_size} features after the label)"
        )
    if sizes[4] == 0:
        raise DataError("channel 'validation' is empty on every host")
    steps = math.ceil(sizes[3] / hps.batch_size)  # the largest host's batch count

    arch = models.architecture(input_size, hps.hidden_units, num_classes, hps.dropout)
    torch.manual_seed(hps.seed)
    net = models.build(arch).to(device.torch_device)
    group.broadcast_module(net)
    parameters = [p for p in net.parameters() if p.requires_grad]
    optimizer = _make_optimizer(hps, parameters)

    x_train = torch.as_tensor(train_set.features, device=device.torch_device)
    y_train = torch.as_tensor(train_set.labels, device=device.torch_device)
    x_val = torch.as_tensor(validation_set.features.reshape(-1, input_size), device=device.torch_device)
    y_val = torch.as_tensor(validation_set.labels, device=device.torch_device)

    checkpoint_dir = Path(hps.checkpoint_dir) if hps.checkpoint_dir else paths.default_checkpoint_dir
    state = {
        "epoch": 0,
        "best_loss": math.inf,
        "best_epoch": 0,
        "best_metrics": None,
        "best_state": None,
        "epochs_since_best": 0,
        "history": [],
        "stopped_early": False,
    }
    checkpoint = group.broadcast_object(checkpoints.load(checkpoint_dir) if group.is_main else None)
    if checkpoint is not None:
        if checkpoint["architecture"] != arch:
            raise CheckpointError(
                f"the checkpoint in {checkpoint_dir} is for another model ({checkpoint['architecture']}) "
                f"than these hyperparameters and data give ({arch}); remove it or set checkpoint_dir"
            )
        net.load_state_dict(checkpoint["model_state"])
        optimizer.load_state_dict(checkpoint["optimizer_state"])
        device.set_rng_state(checkpoint.get("rng_state") or {})
        for key in state:
            state[key] = checkpoint[key]
        changed = {
            key: (checkpoint["hyperparameters"].get(key), value)
            for key, value in hps.as_dict().items()
            if checkpoint["hyperparameters"].get(key) != value
        }
        # (no "validation_loss=" here: metric regexes would take it for a new value)
        best = (
            f" (best so far: epoch {state['best_epoch']}, validation loss {state['best_loss']:.6f})"
            if state["best_metrics"]
            else ""
        )
        log(f"resumed from checkpoint at epoch={state['epoch']}{best} in {checkpoint_dir}")
        if changed:
            log(
                "hyperparameters changed since the checkpoint: "
                + ", ".join(f"{key} {old} -> {new}" for key, (old, new) in changed.items())
            )
    else:
        log(f"no checkpoint in {checkpoint_dir}: starting at epoch 1")

    # The last finished epoch's checkpoint, kept to be rewritten as it was on SIGTERM
    # (the weights in memory may by then be part-way through the next epoch).
    snapshot = {"state": checkpoint}

    def save_checkpoint() -> None:
        snapshot["state"] = {
            **state,
            "model_state": _cpu_state(net),
            "optimizer_state": copy.deepcopy(optimizer.state_dict()),
            "rng_state": device.rng_state(),
            "seed": hps.seed,
            "architecture": arch,
            "hyperparameters": hps.as_dict(),
            "saved_at": time.time(),
        }
        if group.is_main:
            checkpoints.save(checkpoint_dir, snapshot["state"])

    interrupted_epoch = None
    finished = state["stopped_early"] or state["epoch"] >= hps.epochs
    epoch = state["epoch"]
    train_started = time.time()
    while not finished and epoch < hps.epochs:
        epoch += 1
        if stop and world == 1:
            interrupted_epoch = epoch
            break
        # Seeded per (seed, epoch, rank): the same path whether or not the run was resumed.
        torch.manual_seed(hps.seed * 1_000_003 + epoch * 7_919 + rank)
        generator = torch.Generator().manual_seed(hps.seed * 1_000_003 + epoch * 7_919 + rank)
        net.train()
        loss_sum = torch.zeros((), dtype=device.accumulate_dtype, device=device.torch_device)
        rows_seen = 0
        for rows in _batches(len(train_set), hps.batch_size, steps, generator):
            if world == 1 and stop:
                interrupted_epoch = epoch
                break
            rows = rows.to(device.torch_device)
            optimizer.zero_grad()
            loss = F.cross_entropy(net(x_train[rows]), y_train[rows])
            loss.backward()
            device.mark_step()
            if group.sync_gradients(parameters, bool(stop)):
                interrupted_epoch = epoch
                break
            optimizer.step()
            device.mark_step()
            loss_sum += loss.detach().to(loss_sum.dtype) * rows.shape[0]
            rows_seen += int(rows.shape[0])
        if interrupted_epoch is not None:
            break
        train_total, train_count = group.sum([loss_sum.item(), rows_seen])
        validation_loss, validation_accuracy = _evaluate(net, x_val, y_val, group, device)
        metrics = {
            "epoch": epoch,
            "train_loss": train_total / train_count,
            "validation_loss": validation_loss,
            "validation_accuracy": validation_accuracy,
        }
        state["history"].append(metrics)
        state["epoch"] = epoch
        if validation_loss < state["best_loss"]:
            state.update(
                best_loss=validation_loss,
                best_epoch=epoch,
                best_metrics=metrics,
                best_state=_cpu_state(net),
                epochs_since_best=0,
            )
        else:
            state["epochs_since_best"] += 1
        log(metric_line("epoch", epoch, metrics))
        if hps.early_stopping_patience and state["epochs_since_best"] >= hps.early_stopping_patience:
            state["stopped_early"] = True
        save_checkpoint()
        if state["stopped_early"]:
            log(
                f"early stopping at epoch={epoch}: validation loss has not improved for "
                f"{state['epochs_since_best']} epochs; keeping best_epoch={state['best_epoch']}"
            )
            finished = True

    if interrupted_epoch is None and state["best_state"] is None:
        raise TrainingError(
            "the validation loss was not finite in any epoch (training diverged); try a lower learning_rate"
        )
    summary = {
        "history": state["history"],
        "best": state["best_metrics"],
        "epochs_completed": state["epoch"],
        "stopped_early": state["stopped_early"],
        "interrupted": interrupted_epoch is not None,
        "hyperparameters": hps.as_dict(),
        "device": device.kind,
        "hosts": world,
        "train_seconds": round(time.time() - train_started, 3),
        "total_seconds": round(time.time() - started, 3),
    }
    if interrupted_epoch is not None:
        who = "SIGTERM received" if stop else "another host received SIGTERM"
        log(f"{who}: abandoned epoch={interrupted_epoch}", all_ranks=True)
        if snapshot["state"] is not None:
            if group.is_main:
                checkpoints.save(checkpoint_dir, snapshot["state"])
            log(f"checkpoint at epoch={snapshot['state']['epoch']} saved in {checkpoint_dir}")
    if group.is_main:
        if state["best_state"] is not None:
            config = dict(
                arch,
                classes=list(range(num_classes)),
                hyperparameters=hps.as_dict(),
                best=state["best_metrics"],
                input="raw feature values; the model divides them by input_scale",
            )
            models.save(paths.model_dir, state["best_state"], config)
        _atomic_write_text(paths.output_data_dir / "metrics.json", json.dumps(summary, indent=2))
    if interrupted_epoch is not None:
        if state["best_state"] is not None:
            log(f"best model so far (best_epoch={state['best_epoch']}) saved to {paths.model_dir}; exiting")
        else:
            log("no epoch finished: nothing to save; exiting")
        return summary
    log(
        f"training took {summary['train_seconds']:.2f}s ({summary['total_seconds']:.2f}s in all); "
        f"model saved to {paths.model_dir}"
    )
    log(metric_line("best_epoch", state["best_epoch"], state["best_metrics"]))
    return summary
