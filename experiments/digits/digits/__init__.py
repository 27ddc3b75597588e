"""Example SageMaker training workload: a small PyTorch classifier for sklearn's 8x8 digits.

The package follows the SageMaker "bring your own container" training contract:
``docker run <image> train`` with ``/opt/ml`` laid out as SageMaker lays it out
(see ``paths.py``). ``model.load`` is the entry point for whoever serves the model.

Runs on torch 1.13 (Debian bookworm's python3-torch) as well as torch 2.x.
"""

__version__ = "1.0.0"
