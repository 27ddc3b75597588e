"""SageMaker's wire protocol: JSON 1.1 requests named by ``X-Amz-Target: SageMaker.<Op>``, every one of
them through this one dispatcher:

* **our engine's** operations (the backends' ``operations``: training, tuning, hosting, the registry,
  AutoML) are answered here (``localaws.protocol``);
* **every other operation moto's SageMaker implements** (experiments, trials and trial components,
  pipelines and their executions, notebook instances, clusters, domains, model cards, ...) is read and
  checked here against botocore's model as AWS's front door checks it, then left to moto (``handle``
  answers None and the gateway hands the request on), whose records persist with the rest of its
  state (``localaws.state``);
* **what neither implements** is AWS's answer to an operation its endpoint does not serve,
  ``UnknownOperationException`` (400), naming the operation.

Some of our operations keep their records in moto's (AutoML jobs, the experiment records of new jobs:
``automl.py``, ``experiments.py``): they are answered inside moto's gate (``in_moto``), so a snapshot
never catches them half-way and their changes are saved as moto's are. Only the protocol knows about
HTTP; the backends know only dicts shaped like botocore's service model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from functools import lru_cache

from localaws import aws_errors
from localaws.aws_errors import AwsError
from localaws.protocol import Answer, JsonProtocol, handlers_of
from localaws.sagemaker import moto_records, shapes
from localaws.sagemaker.errors import UnknownOperation
from localaws.sagemaker.experiments import ExperimentRecords

TARGET_PREFIX = "SageMaker."

#: Operations moto has on what our engine runs (tuning, processing and transform jobs): never moto's
#: records, which would say a job ran that never did (the engine's backends take the ones they implement).
ENGINE_KEPT = frozenset(
    {
        "DeleteHyperParameterTuningJob",
        "CreateProcessingJob",
        "DescribeProcessingJob",
        "ListProcessingJobs",
        "StopProcessingJob",
        "CreateTransformJob",
        "DescribeTransformJob",
        "ListTransformJobs",
    }
)
#: Tags are ours for the engine's resources and moto's for the resources moto keeps (by ARN).
TAG_OPERATIONS = frozenset({"AddTags", "ListTags", "DeleteTags"})
#: The kinds of resource (``arn:...:<kind>/<name>``) whose records only moto keeps.
MOTO_KINDS = frozenset(
    {
        "automl-job",
        "cluster",
        "compilation-job",
        "data-quality-job-definition",
        "domain",
        "experiment",
        "experiment-trial",
        "experiment-trial-component",
        "model-bias-job-definition",
        "model-card",
        "model-explainability-job-definition",
        "model-quality-job-definition",
        "notebook-instance",
        "pipeline",
    }
)
#: Search's resources whose records moto keeps (training jobs, endpoints, models and packages are ours).
MOTO_SEARCHABLE = frozenset(
    {
        "Experiment",
        "ExperimentTrial",
        "ExperimentTrialComponent",
        "FeatureGroup",
        "Image",
        "ImageVersion",
        "Pipeline",
        "PipelineExecution",
        "Project",
    }
)

#: Runs an answer inside moto's gate: (the request's environ, the work) -> the work's answer.
InMoto = Callable[[dict, Callable[[], Answer]], Answer]


@lru_cache(maxsize=1)
def moto_operations() -> frozenset[str]:
    """The SageMaker operations of botocore's model that moto's SageMaker answers (as moto dispatches
    them: a method of its responses class named in moto's snake case)."""
    from moto.core.utils import camelcase_to_underscores  # noqa: PLC0415 - moto loads with the gateway
    from moto.sagemaker.responses import SageMakerResponse  # noqa: PLC0415

    return frozenset(
        operation
        for operation in shapes.service_model("sagemaker").operation_names
        if callable(getattr(SageMakerResponse, camelcase_to_underscores(operation), None))
    )


def unsupported(operation: str) -> UnknownOperation:
    """AWS's answer to an operation its endpoint does not serve, naming it."""
    if shapes.has_operation("sagemaker", operation.split(" ", 1)[0]):
        return UnknownOperation(
            f"localaws does not implement SageMaker {operation}: neither its engine nor moto answers it."
        )
    return UnknownOperation(f"Unknown operation {operation}.")


class SageMakerResponses:
    """The one dispatcher of SageMaker's control plane (see the module)."""

    def __init__(
        self,
        backends: Iterable,
        *,
        experiments: ExperimentRecords,
        in_moto: InMoto,
        engine_owns: Callable[[str], bool],
        moto_held: Iterable[str] = (),
    ):
        """``engine_owns(arn)``: whether a resource's tags are the engine's; ``moto_held``: our operations
        whose records are moto's (answered in its gate, as are the job creations ``experiments`` records)."""
        handlers = handlers_of(*backends)
        for operation in experiments.operations & handlers.keys():
            handlers[operation] = experiments.wrap(operation, handlers[operation])
        self.protocol = JsonProtocol("sagemaker", TARGET_PREFIX, handlers, unknown=unsupported)
        self.in_moto = in_moto
        self.engine_owns = engine_owns
        self.experiments = experiments
        self.in_moto_operations = frozenset(moto_held) | (experiments.operations & handlers.keys())
        #: moto's operations, less ours and those whose records are the engine's.
        self.moto_operations = moto_operations() - handlers.keys() - ENGINE_KEPT

    @property
    def handlers(self):
        return self.protocol.handlers

    def handle(self, environ: dict, target: str, region: str | None = None) -> Answer | None:
        """(status, headers, body) of a request we answer; None for one moto answers (its body read).
        ``region``: the request's (its signature's), where moto keeps the records it names."""
        with moto_records.request_region(region):
            return self._handle(environ, target)

    def _handle(self, environ: dict, target: str) -> Answer | None:
        operation = self.protocol.operation(target)
        if operation not in self.moto_operations and operation not in TAG_OPERATIONS:
            return self._ours(environ, target, operation)
        try:
            params = self.protocol.read(environ, operation)
            checked = shapes.validate_request(operation, copy.deepcopy(params))
            if self._moto_answers(operation, checked):
                self.experiments.check(operation, checked)
                return None
        except AwsError as error:
            return aws_errors.answer(environ, "json", error)
        if operation not in self.protocol.handlers:  # Search of what the engine keeps
            return aws_errors.answer(environ, "json", unsupported(f"{operation} of {checked.get('Resource')}"))
        return self._ours(environ, target, operation, params)

    def _ours(self, environ: dict, target: str, operation: str, params=None) -> Answer:
        def answer() -> Answer:
            return self.protocol.handle(environ, target, params, read=params is None)

        if operation in self.in_moto_operations:
            return self.in_moto(environ, answer)
        return answer()

    def _moto_answers(self, operation: str, params: dict) -> bool:
        if operation in TAG_OPERATIONS:
            arn = str(params.get("ResourceArn", ""))
            return not self.engine_owns(arn) and _kind(arn) in MOTO_KINDS
        if operation == "Search":
            return params.get("Resource") in MOTO_SEARCHABLE
        return True


def _kind(arn: str) -> str:
    """``arn:aws:sagemaker:<region>:<account>:<kind>/<name>`` -> kind."""
    return arn.split(":", 5)[-1].split("/", 1)[0] if arn.count(":") >= 5 else ""


def sagemaker_protocol(*backends, **wiring) -> SageMakerResponses:
    """SageMaker's operations, each answered by the backend that lists it in its ``operations``, or moto
    (see ``SageMakerResponses`` for ``wiring``)."""
    return SageMakerResponses(backends, **wiring)
