"""One endpoint for every service: SageMaker (and Application Auto Scaling for its variants) to our
engine, what of SageMaker it does not implement and everything else to an embedded moto (ECR's image
calls after its records are brought into step with localaws's images, ``ecr_images``). The engine's
parts are built here, each given what it needs in its constructor.

A request's service is read the way AWS's front door reads it: the SigV4
credential scope (``.../<region>/<service>/aws4_request``) and, for JSON
protocols, ``X-Amz-Target``. ``/_localaws/...`` is localaws's own admin API.
"""

from __future__ import annotations

import json
import logging
import sys
import threading

from werkzeug.wrappers import Request, Response

from localaws import aws_errors, bodies, iam
from localaws.applicationautoscaling.models import AutoScalingBackend
from localaws.applicationautoscaling.responses import TARGET_PREFIX as AUTOSCALING_TARGET_PREFIX
from localaws.applicationautoscaling.responses import AutoScalingResponses
from localaws.applicationautoscaling.scaling import ScalingLoop, TargetTrackingAlarms
from localaws.aws import Clients
from localaws.aws_errors import AwsError, MotoErrors
from localaws.ecr_images import TARGET_PREFIX as ECR_TARGET_PREFIX
from localaws.ecr_images import EcrImages
from localaws.image_contexts import ImageContexts
from localaws.sagemaker.hosting.lifecycle import HostingEngine
from localaws.sagemaker.hosting.models import HostingBackend
from localaws.sagemaker.hosting.router import Router
from localaws.sagemaker.hosting.runtime import RuntimeResponses, is_invocation
from localaws.sagemaker.automl import AutoMLBackend
from localaws.sagemaker.experiments import ExperimentRecords
from localaws.sagemaker.models import SageMakerBackend
from localaws.sagemaker.processing import ProcessingExecutor
from localaws.sagemaker.processing_models import ProcessingBackend
from localaws.sagemaker.registry import RegistryBackend
from localaws.sagemaker.responses import TARGET_PREFIX, sagemaker_protocol
from localaws.sagemaker.runners import Runners
from localaws.sagemaker.training import TrainingExecutor
from localaws.sagemaker.transform.executor import TransformExecutor
from localaws.sagemaker.transform.models import TransformBackend
from localaws.sagemaker.tuning.executor import TuningExecutor
from localaws.sagemaker.tuning.models import TuningBackend
from localaws.settings import Settings
from localaws.ssm import TARGET_PREFIX as SSM_TARGET_PREFIX
from localaws.ssm import SsmAgent, seed

log = logging.getLogger(__name__)

#: Set in the environ when our engine (not moto) answered a request that may have changed it.
ENGINE_CHANGE = "localaws.engine_change"


def signing_service(environ: dict) -> str | None:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    try:
        scope = auth.split("Credential=", 1)[1].split(",", 1)[0]
        return scope.split("/")[3].lower()
    except IndexError:
        return None


def signing_region(environ: dict) -> str | None:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    try:
        return auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")[2]
    except IndexError:
        return None


class Gateway:
    def __init__(self, settings: Settings):
        # moto's server app (every backend's URL map) loads when a gateway is built, not on import.
        from moto.moto_server.werkzeug_app import (  # noqa: PLC0415 - see above
            DomainDispatcherApplication,
            create_backend_app,
        )

        self.settings = settings
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        iam.load_managed_policies()  # before moto creates an account's IAM
        self.moto = MotoErrors(DomainDispatcherApplication(create_backend_app))  # AWS's errors, never HTML
        self.iam_simulator = iam.Simulator()  # IAM's policy simulator, which moto lacks
        self.clients = Clients(settings)
        self.images = ImageContexts(settings.work_dir / "images")
        self.runners = Runners(settings, self.images)
        # ECR lists (and deletes) the images registered here or pushed to the local registry.
        self.ecr_images = EcrImages(settings, self.images, self.runners.docker, self.moto, self._in_moto)
        lock = threading.RLock()  # one lock: training, tuning, hosting's resources and the registry
        self.training = TrainingExecutor(settings, self.clients, self.runners, lock)
        self.sagemaker = SageMakerBackend(settings, self.training, lock)
        self.tuning = TuningBackend(self.sagemaker, TuningExecutor)
        # Hosting: InvokeEndpoint's router, the engine that runs endpoints (and their metrics), and
        # Application Auto Scaling, which scales the engine's variants and hears of deleted endpoints.
        self.router = Router(settings)
        self.hosting_engine = HostingEngine(settings, self.clients, self.runners, self.router, lock)
        alarms = TargetTrackingAlarms(settings, self.clients)
        self.autoscaling = AutoScalingBackend(settings, self.hosting_engine, alarms)
        self.scaling = ScalingLoop(settings, self.autoscaling, self.hosting_engine, alarms, self.clients)
        self.hosting = HostingBackend(settings, self.sagemaker, self.hosting_engine, self.autoscaling)
        self.registry = RegistryBackend(self.sagemaker)
        self.processing = ProcessingBackend(
            self.sagemaker, ProcessingExecutor(settings, self.clients, self.runners, lock)
        )
        # Batch transform: its jobs start their models' containers with hosting's fleet.
        self.transform = TransformBackend(
            self.sagemaker, self.hosting, TransformExecutor(settings, self.clients, self.hosting_engine.fleet, lock)
        )
        # AutoML jobs and the experiment records of new jobs are kept in moto's records (answered in its gate).
        self.automl = AutoMLBackend(settings)
        self.sagemaker_api = sagemaker_protocol(
            self.sagemaker,
            self.tuning,
            self.hosting,
            self.registry,
            self.processing,
            self.transform,
            self.automl,
            experiments=ExperimentRecords(settings),
            moto_held=self.automl.operations,
            in_moto=self._in_moto,
            engine_owns=lambda arn: arn in self.sagemaker.tags,
        )
        self.runtime = RuntimeResponses(self.router)
        self.autoscaling_api = AutoScalingResponses(self.autoscaling)
        # Run Command of the project's host documents is carried out here (localaws/ssm); the rest is moto's.
        self.ssm = SsmAgent(settings, self.clients, self.runners)

    def __call__(self, environ, start_response):
        try:
            return self._route(environ, start_response)
        except (ConnectionError, TimeoutError):  # the client went away: nobody to answer
            raise
        except Exception as error:  # noqa: BLE001 - a bug of ours: still AWS's answer, never werkzeug's HTML
            log.exception("%s %s failed", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            protocol = aws_errors.request_protocol(environ, signing_service(environ))
            return aws_errors.respond(
                environ,
                start_response,
                protocol,
                "InternalFailure",
                f"localaws failed: {type(error).__name__}: {error}",
                500,
                sys.exc_info(),
            )

    def _route(self, environ, start_response):
        service = signing_service(environ)
        # InvokeEndpoint first: the one call on a model's request path.
        if service in ("sagemaker", None) and is_invocation(environ):
            return self.runtime(environ, start_response)
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_localaws/"):
            environ[ENGINE_CHANGE] = environ.get("REQUEST_METHOD") not in ("GET", "HEAD")
            return self.admin(Request(environ))(environ, start_response)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        answer = None
        if target.startswith(TARGET_PREFIX) and service in ("sagemaker", None):
            answer = self.sagemaker_api.handle(environ, target, signing_region(environ))
        elif target.startswith(AUTOSCALING_TARGET_PREFIX):  # sagemaker variants ours, the rest moto's
            answer = self.autoscaling_api.handle(environ, target)
        elif service == "iam":
            answer = self.iam_simulator.handle(environ)  # reads only
            if answer is not None:
                return Response(answer[2], status=answer[0], headers=answer[1])(environ, start_response)
        elif target.startswith(ECR_TARGET_PREFIX):
            answer = self.ecr_images.handle(environ, target, signing_region(environ))
        elif target.startswith(SSM_TARGET_PREFIX):
            answer = self.ssm.handle(environ, target, signing_region(environ))
        if answer is None:
            if service in ("ec2", None):
                seed.seed_offerings()  # on first use: importing moto's EC2 models costs seconds of CPU
            return self.moto(environ, start_response)
        environ[ENGINE_CHANGE] = True
        return Response(answer[2], status=answer[0], headers=answer[1])(environ, start_response)

    def _in_moto(self, environ: dict, work):
        """``work()`` as a request into moto is run: in its gate, which ``localaws.state`` puts there (a
        snapshot waits for it, and a request that may change moto's records marks them to be saved)."""
        return self.moto.call(lambda _environ, _start_response: work(), environ, None)

    # --- localaws's own API ---------------------------------------------------------------

    def admin(self, request: Request) -> Response:
        path = request.path[len("/_localaws/") :].strip("/")
        try:
            if path == "health":
                return _json({"status": "running", "runner": self.settings.runner})
            if path == "images" and request.method == "POST":
                body = bodies.loads(bodies.buffer(request.environ, bodies.MAX_ADMIN_BODY) or b"{}")
                if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("ImageUri", "Context")):
                    raise ValueError("the body must be a JSON object with the strings ImageUri and Context")
                registered = self.images.register(body["ImageUri"], body["Context"])
                self.ecr_images.registered(request.environ, body["ImageUri"])
                return _json(registered)
            if path == "images" and request.method == "GET":
                return _json(self.images.list())
            parts = path.split("/")
            if len(parts) == 2 and parts[0] == "endpoints" and request.method == "GET":
                found = self.hosting_engine.describe_instances(parts[1])
                if found is not None:
                    return _json(found)
                return _json({"message": f"no endpoint {parts[1]}"}, status=404)
            if len(parts) == 3 and parts[0] == "training-jobs" and parts[2] == "spot-interruption":
                if request.method == "POST":
                    return _json(self.sagemaker.interrupt_spot_training(parts[1]))
        except AwsError as error:
            return _json({"__type": error.code, "message": error.message}, status=error.status)
        except bodies.BodyTooLarge as error:
            return _json({"message": str(error)}, status=413)
        except (KeyError, ValueError, OSError) as error:
            return _json({"message": str(error)}, status=400)
        except Exception as error:  # noqa: BLE001 - a bug of ours: still an answer in JSON, never HTML
            log.exception("admin %s %s failed", request.method, request.path)
            return _json({"message": f"{type(error).__name__}: {error}"}, status=500)
        return _json({"message": f"unknown localaws admin path {request.method} {request.path}"}, status=404)

    def close(self) -> None:
        self.training.begin_shutdown()  # the trials tuning stops next must not upload through a stopped gateway
        self.tuning.executor.shutdown()  # first: it would launch new trials as the old ones stop
        self.sagemaker.shutdown()
        self.processing.shutdown()
        self.transform.shutdown()  # before hosting's fleet, which started its containers
        self.scaling.close()  # before the endpoints it scales
        self.hosting.shutdown()
        self.ssm.shutdown()
        self.runners.close()


def _json(body, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")
