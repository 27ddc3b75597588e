"""The classifier, and how it is saved to and loaded from a SageMaker model directory.

The network takes raw pixel values as they come in the data (0..16 for sklearn's
digits) and divides them by ``input_scale`` itself, so whoever serves the model
passes raw features and needs no preprocessing code.

A model directory holds:

    model.pth           the state_dict (best epoch's weights)
    model_config.json   what ``load`` needs to rebuild the net (architecture, sizes,
                        classes, input scale) plus the hyperparameters and best metrics

``load(model_dir)`` returns the net in eval mode on the CPU (or ``map_location``);
``predict(model, features)`` maps raw feature rows to class labels.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

WEIGHTS_FILE = "model.pth"
CONFIG_FILE = "model_config.json"
FORMAT_VERSION = 1
DEFAULT_INPUT_SCALE = 16.0


class DigitsMLP(nn.Module):
    """input/scale -> Linear(hidden) -> ReLU -> Dropout -> Linear(hidden/2) -> ReLU -> Dropout -> Linear(classes)."""

    def __init__(
        self,
        input_size: int = 64,
        hidden_units: int = 128,
        num_classes: int = 10,
        dropout: float = 0.2,
        input_scale: float = DEFAULT_INPUT_SCALE,
    ):
        super().__init__()
        second = max(1, hidden_units // 2)
        self.input_scale = float(input_scale)
        self.net = nn.Sequential(
            nn.Linear(input_size, hidden_units),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_units, second),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(second, num_classes),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features / self.input_scale)


def architecture(
    input_size: int, hidden_units: int, num_classes: int, dropout: float, input_scale: float = DEFAULT_INPUT_SCALE
) -> dict:
    """The part of model_config.json that ``build`` reads."""
    return {
        "architecture": "mlp",
        "input_size": int(input_size),
        "hidden_units": int(hidden_units),
        "layers": [int(hidden_units), max(1, int(hidden_units) // 2)],
        "num_classes": int(num_classes),
        "dropout": float(dropout),
        "input_scale": float(input_scale),
    }


def build(config: dict) -> DigitsMLP:
    if config.get("architecture", "mlp") != "mlp":
        raise ValueError(f"unknown architecture {config.get('architecture')!r}")
    return DigitsMLP(
        input_size=int(config["input_size"]),
        hidden_units=int(config["hidden_units"]),
        num_classes=int(config["num_classes"]),
        dropout=float(config.get("dropout", 0.0)),
        input_scale=float(config.get("input_scale", DEFAULT_INPUT_SCALE)),
    )


def torch_load(path: Path, map_location: Any = "cpu") -> Any:
    """torch.load of tensors and plain containers only, on torch 1.13 and 2.x alike."""
    kwargs = {"map_location": map_location}
    if "weights_only" in inspect.signature(torch.load).parameters:
        kwargs["weights_only"] = True
    return torch.load(str(path), **kwargs)


def _atomic_write_bytes(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save(model_dir: Path, state_dict: dict, config: dict) -> None:
    """Writes model.pth and model_config.json (each written to a temp file, then renamed)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    cpu_state = {key: value.detach().to("cpu") for key, value in state_dict.items()}
    config = dict(
        config,
        format_version=FORMAT_VERSION,
        weights=WEIGHTS_FILE,
        framework={"torch": torch.__version__.split("+")[0]},
    )
    _atomic_write_bytes(model_dir / WEIGHTS_FILE, lambda handle: torch.save(cpu_state, handle))
    text = json.dumps(config, indent=2, sort_keys=True).encode()
    _atomic_write_bytes(model_dir / CONFIG_FILE, lambda handle: handle.write(text))


def load_config(model_dir: Path) -> dict:
    return json.loads((Path(model_dir) / CONFIG_FILE).read_text())


def load(model_dir: Path, map_location: Any = "cpu") -> DigitsMLP:
    """Rebuilds the net from model_config.json and loads model.pth; returns it in eval mode.

    The config is also available as ``model.config``.
    """
    model_dir = Path(model_dir)
    config = load_config(model_dir)
    model = build(config)
    model.load_state_dict(torch_load(model_dir / config.get("weights", WEIGHTS_FILE), map_location))
    model.config = config
    return model.eval()


def predict_proba(model: nn.Module, features) -> torch.Tensor:
    """Class probabilities for raw feature rows (array-like, shape (n, input_size))."""
    parameter = next(model.parameters())
    inputs = torch.as_tensor(features, dtype=torch.float32, device=parameter.device)
    if inputs.dim() == 1:
        inputs = inputs.unsqueeze(0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.softmax(model(inputs), dim=1).cpu()
    finally:
        model.train(was_training)


def predict(model: nn.Module, features) -> list:
    """Class labels for raw feature rows, mapped through the config's ``classes``."""
    indices = predict_proba(model, features).argmax(dim=1).tolist()
    classes = getattr(model, "config", {}).get("classes")
    return [classes[index] for index in indices] if classes else indices
