"""README's "Train your own model", followed literally as far as it goes without the pipeline: its
shell block writes the data, its code blocks are the files, and the files do what the section says
when the training toolkit runs train.py and the container loads the model with model_fn.
(``make run EXPERIMENT=iris`` itself, the section's last step, is the pipeline's to test.)"""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
import yaml

from tests.examples.script_mode import REPO_ROOT, load_module, metric_values, opt_ml, train

SECTION = re.search(
    r"^## Train your own model\n(.*?)^## ", (REPO_ROOT / "README.md").read_text(), re.MULTILINE | re.DOTALL
).group(1)
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```$", SECTION, re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The repository's layout in a temporary folder, after the section's steps 1 to 4."""
    root = tmp_path_factory.mktemp("tutorial")
    (root / ".venv").symlink_to(REPO_ROOT / ".venv")
    [setup] = [body for language, body in BLOCKS if language == "bash" and "mkdir" in body]
    subprocess.run(["bash", "-euc", setup], cwd=root, check=True, capture_output=True, text=True)
    files = [body for language, body in BLOCKS if body.startswith("# experiments/iris/")]
    for body in files:
        path = root / body.splitlines()[0][2:]
        path.write_text(body)
    assert sorted(p.name for p in (root / "experiments" / "iris").iterdir()) == [
        "data",
        "experiment.yaml",
        "inference.py",
        "smoke.csv",
        "train.py",
    ]
    return root / "experiments" / "iris"


def test_the_section_names_make_run_with_the_experiment():
    assert ("bash", "make run EXPERIMENT=iris\n") in BLOCKS


@pytest.mark.slow
def test_the_tutorials_files_train_and_load_as_the_section_says(folder, tmp_path):
    document = yaml.safe_load((folder / "experiment.yaml").read_text())
    assert document["framework"] == "sklearn" and (folder / document["entry_point"]).is_file()
    assert (folder / document["deploy"]["smoke"]["samples"]).is_file()
    root = opt_ml(tmp_path, folder, {name: folder / source for name, source in document["channels"].items()})
    job = train(root, document["entry_point"], document["hyperparameters"])
    assert job.result.returncode == 0, job.result.stderr
    metrics = metric_values(document["metric_definitions"], job.result.stdout)
    assert metrics[document["objective"]["metric"]] > 0.8
    model = load_module(root / "code" / "inference.py").model_fn(str(job.model_dir))
    # what the container's default input_fn and predict_fn do with the smoke file: rows in, one class each
    rows = np.loadtxt(folder / "smoke.csv", delimiter=",", ndmin=2)
    assert model.predict(rows).tolist() == [0.0, 0.0, 1.0, 1.0, 2.0]
