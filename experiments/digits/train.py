"""Script-mode training entry point (``framework: pytorch``, ``entry_point: train.py``).

SageMaker's training toolkit unpacks the source into /opt/ml/code and runs
``python train.py --epochs 6 --batch_size 32 ...`` (the job's hyperparameters, one
``--name value`` pair each), with the environment it sets: ``SM_CHANNEL_TRAIN`` and
``SM_CHANNEL_VALIDATION`` (CSV, label first), ``SM_MODEL_DIR`` (model.pth and
model_config.json go there), ``SM_OUTPUT_DATA_DIR`` (metrics.json), ``SM_OUTPUT_DIR``
(the failure file), ``SM_HOSTS`` and ``SM_CURRENT_HOST`` (more than one host: gloo
data parallelism), ``SM_NUM_GPUS`` (CUDA is used when torch sees a GPU). Checkpoints go
to /opt/ml/checkpoints (SageMaker's ``CheckpointConfig.LocalPath`` default), so a spot
job that SageMaker restarts resumes where it stopped.

The same code runs in this folder's own container (``train``, from hyperparameters.json):
see README.md and digits/ for the contract, the log lines and the outputs.
"""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from digits.entry import main  # noqa: E402  (installs the SIGTERM handler before torch loads)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
