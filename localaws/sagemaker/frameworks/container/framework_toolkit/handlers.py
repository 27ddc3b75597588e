"""The framework containers' default handlers, for each function the user's module leaves out.

Both decode application/json, text/csv and application/x-npy into a numpy array (json and csv
bodies arrive as text) and encode the prediction back into one of the three; anything else is
``UnsupportedFormatError`` (415). scikit-learn (sagemaker-scikit-learn-container): no default
``model_fn``; text input as float32; ``model.predict(data)``; the output in ``accept`` exactly.
PyTorch (sagemaker-pytorch-inference-toolkit): ``model_fn`` loads ``model.pt`` (TorchScript);
input as a float tensor; ``model(data)`` under ``torch.no_grad()`` in eval mode; the output in the
first type of ``accept`` it supports.
"""

from __future__ import annotations

# numpy and torch are imported where used, not here: serving imports this module before it installs the
# user's requirements.txt, which may bring versions of their own (and the scikit-learn container has no torch).
import io
import json
import os

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
UTF8_TYPES = (JSON, CSV)
SUPPORTED = (JSON, CSV, NPY)


class UnsupportedFormatError(Exception):
    status = 415

    def __init__(self, content_type: str):
        super().__init__(
            f"Content type {content_type} is not supported by this framework.\n\n"
            "Please implement input_fn to to deserialize the request data or an output_fn to\n"
            "serialize the response. For more information, see the SageMaker Python SDK README."
        )


def decode(data, content_type: str):
    import numpy as np  # noqa: PLC0415 - after the user's requirements

    if content_type == JSON:
        return np.array(json.loads(data))
    if content_type == CSV:
        return np.genfromtxt(io.StringIO(data), delimiter=",")
    if content_type == NPY:
        return np.load(io.BytesIO(data), allow_pickle=False)
    raise UnsupportedFormatError(content_type)


def encode(prediction, accept: str):
    import numpy as np  # noqa: PLC0415 - after the user's requirements

    if accept == JSON:
        return json.dumps(
            prediction,
            default=lambda value: value.tolist() if hasattr(value, "tolist") else json.JSONEncoder().default(value),
        )
    if accept == CSV:
        text = io.StringIO()
        np.savetxt(text, prediction, delimiter=",", fmt="%s")
        return text.getvalue()
    if accept == NPY:
        buffer = io.BytesIO()
        np.save(buffer, prediction)
        return buffer.getvalue()
    raise UnsupportedFormatError(accept)


def parse_accept(accept: str) -> list[str]:
    return [part.split(";")[0].strip() for part in accept.split(",") if part.strip()]


class SklearnHandlers:
    @staticmethod
    def model_fn(model_dir):
        raise NotImplementedError(
            "Please provide a model_fn implementation. See documentation for model_fn at "
            "https://github.com/aws/sagemaker-python-sdk"
        )

    @staticmethod
    def input_fn(input_data, content_type):
        import numpy as np  # noqa: PLC0415 - after the user's requirements

        array = decode(input_data, content_type)
        return array.astype(np.float32) if content_type in UTF8_TYPES else array

    @staticmethod
    def predict_fn(input_data, model):
        return model.predict(input_data)

    @staticmethod
    def output_fn(prediction, accept):
        return encode(prediction, accept), accept


class PytorchHandlers:
    MODEL_FILE = "model.pt"

    @staticmethod
    def _device():
        import torch  # noqa: PLC0415 - after the user's requirements; PyTorch only

        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    @classmethod
    def model_fn(cls, model_dir):
        import torch  # noqa: PLC0415 - after the user's requirements; PyTorch only

        path = os.path.join(model_dir, cls.MODEL_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"Failed to load model with default model_fn: missing file {cls.MODEL_FILE}.")
        try:
            return torch.jit.load(path, map_location=cls._device())
        except RuntimeError as error:
            raise ValueError(f"Failed to load {path}. Please ensure model is saved using torchscript.") from error

    @classmethod
    def input_fn(cls, input_data, content_type):
        import torch  # noqa: PLC0415 - after the user's requirements; PyTorch only

        array = decode(input_data, content_type)
        tensor = torch.FloatTensor(array) if content_type in UTF8_TYPES else torch.from_numpy(array)
        return tensor.to(cls._device())

    @classmethod
    def predict_fn(cls, data, model):
        import torch  # noqa: PLC0415 - after the user's requirements; PyTorch only

        with torch.no_grad():
            model.eval()
            return model(data.to(cls._device()))

    @staticmethod
    def output_fn(prediction, accept):
        import torch  # noqa: PLC0415 - after the user's requirements; PyTorch only

        if isinstance(prediction, torch.Tensor):
            prediction = prediction.detach().cpu().numpy().tolist()
        for content_type in parse_accept(accept):
            if content_type in SUPPORTED:
                return encode(prediction, content_type), content_type
        raise UnsupportedFormatError(accept)


DEFAULTS = {"sklearn": SklearnHandlers, "pytorch": PytorchHandlers}
