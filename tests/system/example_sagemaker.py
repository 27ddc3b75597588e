"""The Amazon provider's system test ``example_sagemaker`` (apache/airflow,
providers/amazon/tests/system/amazon/aws/example_sagemaker.py, provider 9.39), as a DAG of this
repository's: the same tasks in the same order with the same operators, sensors, configurations and
teardown, written here for Airflow 3 (``tests/system/utils.py`` stands in for Airflow's system-test
utilities, which are not packaged).

What differs, and why:

* **Images.** SageMaker's built-in k-NN exists only in AWS's accounts: ``KNN_IMAGE`` is a stand-in with
  its hyperparameters and CSV (tests/system/images/knn), which, as every image that is not a built-in
  algorithm, declares its metrics (``MetricDefinitions``, here ``train:accuracy`` and the tuning
  objective ``test:accuracy``). The preprocessing image is not built on Amazon Linux with the AWS CLI's
  ``docker login`` and ``docker push``: ``set_up`` puts ours (tests/system/images/preprocess, the same
  split) in the ECR repository it created, through localaws's ``register-image``
  (``SYSTEM_TESTS_IMAGE_CONTEXTS`` names the build contexts); ``delete_docker_image`` has no local
  image to remove and says so, as the original does when ``docker rmi`` fails.
* **Short.** Two tuning trials instead of ten, AutoML's time limit 5 s instead of 30, the sensors poking
  every 2 s, and the training operator reading the job's log after 2 s rather than 30 (it waits that
  once even when told not to wait): the same calls, less waiting.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime

import boto3
from airflow.providers.amazon.aws.operators.s3 import (
    S3CreateBucketOperator,
    S3CreateObjectOperator,
    S3DeleteBucketOperator,
)
from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerAutoMLOperator,
    SageMakerCreateExperimentOperator,
    SageMakerDeleteModelOperator,
    SageMakerModelOperator,
    SageMakerProcessingOperator,
    SageMakerRegisterModelVersionOperator,
    SageMakerTrainingOperator,
    SageMakerTransformOperator,
    SageMakerTuningOperator,
)
from airflow.providers.amazon.aws.sensors.sagemaker import (
    SageMakerAutoMLSensor,
    SageMakerProcessingSensor,
    SageMakerTrainingSensor,
    SageMakerTransformSensor,
    SageMakerTuningSensor,
)
from airflow.sdk import DAG, chain, get_current_context, task
from airflow.utils.trigger_rule import TriggerRule
from botocore.exceptions import ClientError

from tests.system.utils import ENV_ID_KEY, SystemTestContextBuilder, prune_logs, watcher

log = logging.getLogger(__name__)

DAG_ID = "example_sagemaker"
ROLE_ARN_KEY = "ROLE_ARN"
#: The k-NN stand-in, registered (or pushed) before the run, as AWS's algorithm images exist before it.
KNN_IMAGE = os.environ.get("SYSTEM_TESTS_KNN_IMAGE", "123456789012.dkr.ecr.us-east-1.amazonaws.com/knn:1")
METRICS = [
    {"Name": "train:accuracy", "Regex": r"train:accuracy=([0-9.]+)"},
    {"Name": "test:accuracy", "Regex": r"test:accuracy=([0-9.]+)"},
]
SAMPLE_SIZE = 600
TUNING_TRIALS = 2
AUTOML_SECONDS = 5
POKE_SECONDS = 2

sys_test_context_task = SystemTestContextBuilder().add_variable(ROLE_ARN_KEY).build()


def generate_data() -> str:
    """A small CSV with a header: the label ``class`` and two features."""
    lines = ["class,x,y"] + [f"{i % 100},{i},{SAMPLE_SIZE - i}" for i in range(SAMPLE_SIZE)]
    return "\n".join(lines) + "\n"


def _create_ecr_repository(name: str) -> str:
    caller = boto3.client("sts").get_caller_identity()["Arn"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Allow access to the system test execution role",
                "Effect": "Allow",
                "Principal": {"AWS": caller},
                "Action": "ecr:*",
            }
        ],
    }
    ecr = boto3.client("ecr")
    repository = ecr.create_repository(repositoryName=name)["repository"]
    ecr.set_repository_policy(repositoryName=repository["repositoryName"], policyText=json.dumps(policy))
    return repository["repositoryUri"]


def _push_preprocessing_image(repository_uri: str) -> str:
    """Our swap for building and pushing the original's image: the preprocessing build context in the
    repository, under localaws's register-image (what a push is for its process runner)."""
    from localaws.client import register_image

    contexts = json.loads(os.environ["SYSTEM_TESTS_IMAGE_CONTEXTS"])
    uri = f"{repository_uri}:latest"
    register_image(os.environ["AWS_ENDPOINT_URL"], uri, contexts["preprocess"])
    return uri


@task
def set_up(env_id: str, role_arn: str):
    bucket = f"{env_id}-sagemaker-example"
    names = {
        "ecr_repository_name": f"{env_id}-repo",
        "model_name": f"{env_id}-KNN-model",
        "processing_job_name": f"{env_id}-processing",
        "training_job_name": f"{env_id}-train",
        "transform_job_name": f"{env_id}-transform",
        "tuning_job_name": f"{env_id}-tune",
        "model_package_group_name": f"{env_id}-group",
        "auto_ml_job_name": f"{env_id}-automl",
        "experiment_name": f"{env_id}-experiment",
    }
    processed_key = f"{env_id}/processed-input-data"
    raw_data_key = f"{env_id}/preprocessing/input.csv"
    results_key = f"{env_id}/results"
    local_input, local_output = "/opt/ml/processing/input", "/opt/ml/processing/output"
    input_data_uri = f"s3://{bucket}/{raw_data_key}"
    model_trained_weights = f"s3://{bucket}/{results_key}/{names['training_job_name']}/output/model.tar.gz"

    image_uri = _push_preprocessing_image(_create_ecr_repository(names["ecr_repository_name"]))
    resources = {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}
    processing_config = {
        "ProcessingJobName": names["processing_job_name"],
        "ProcessingInputs": [
            {
                "InputName": "input",
                "AppManaged": False,
                "S3Input": {
                    "S3Uri": input_data_uri,
                    "LocalPath": local_input,
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                    "S3DataDistributionType": "FullyReplicated",
                    "S3CompressionType": "None",
                },
            }
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "output",
                    "S3Output": {
                        "S3Uri": f"s3://{bucket}/{processed_key}",
                        "LocalPath": local_output,
                        "S3UploadMode": "EndOfJob",
                    },
                    "AppManaged": False,
                }
            ]
        },
        "ProcessingResources": {"ClusterConfig": resources},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "AppSpecification": {"ImageUri": image_uri},
        "RoleArn": role_arn,
    }
    train_channel = {
        "CompressionType": "None",
        "ContentType": "text/csv",
        "DataSource": {
            "S3DataSource": {
                "S3DataDistributionType": "FullyReplicated",
                "S3DataType": "S3Prefix",
                "S3Uri": f"s3://{bucket}/{processed_key}/train.csv",
            }
        },
    }
    algorithm = {"TrainingImage": KNN_IMAGE, "TrainingInputMode": "File", "MetricDefinitions": METRICS}
    training_config = {
        "AlgorithmSpecification": algorithm,
        "HyperParameters": {
            "predictor_type": "classifier",
            "feature_dim": "2",
            "k": "3",
            "sample_size": str(SAMPLE_SIZE),
        },
        "InputDataConfig": [{"ChannelName": "train", **train_channel}],
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/{results_key}/"},
        "ExperimentConfig": {"ExperimentName": names["experiment_name"]},
        "ResourceConfig": resources,
        "RoleArn": role_arn,
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "TrainingJobName": names["training_job_name"],
    }
    model_config = {
        "ExecutionRoleArn": role_arn,
        "ModelName": names["model_name"],
        "PrimaryContainer": {"Mode": "SingleModel", "Image": KNN_IMAGE, "ModelDataUrl": model_trained_weights},
    }
    tuning_config = {
        "HyperParameterTuningJobName": names["tuning_job_name"],
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "HyperParameterTuningJobObjective": {"MetricName": "test:accuracy", "Type": "Maximize"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": TUNING_TRIALS, "MaxParallelTrainingJobs": TUNING_TRIALS},
            "ParameterRanges": {
                "CategoricalParameterRanges": [],
                "IntegerParameterRanges": [
                    {"Name": "k", "MinValue": "1", "MaxValue": str(SAMPLE_SIZE)},
                    {"Name": "sample_size", "MinValue": "1", "MaxValue": str(SAMPLE_SIZE)},
                ],
            },
        },
        "TrainingJobDefinition": {
            "StaticHyperParameters": {"predictor_type": "classifier", "feature_dim": "2"},
            "AlgorithmSpecification": algorithm,
            "InputDataConfig": [
                {"ChannelName": "train", **train_channel},
                {"ChannelName": "test", **train_channel},
            ],
            "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/{results_key}"},
            "ResourceConfig": resources,
            "RoleArn": role_arn,
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        },
    }
    transform_config = {
        "TransformJobName": names["transform_job_name"],
        "TransformInput": {
            "DataSource": {
                "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/{processed_key}/test.csv"}
            },
            "SplitType": "Line",
            "ContentType": "text/csv",
        },
        "TransformOutput": {"S3OutputPath": f"s3://{bucket}/{env_id}/transform"},
        "TransformResources": {"InstanceCount": 1, "InstanceType": "ml.m5.large"},
        "ModelName": names["model_name"],
    }

    ti = get_current_context()["ti"]
    for key, value in {
        **names,
        "docker_image": image_uri,
        "bucket_name": bucket,
        "raw_data_s3_key": raw_data_key,
        "processing_config": processing_config,
        "input_data_uri": input_data_uri,
        "output_data_uri": f"s3://{bucket}/{results_key}",
        "training_config": training_config,
        "model_config": model_config,
        "inference_code_image": KNN_IMAGE,
        "model_trained_weights": model_trained_weights,
        "tuning_config": tuning_config,
        "transform_config": transform_config,
    }.items():
        ti.xcom_push(key=key, value=value)


@task(trigger_rule=TriggerRule.ALL_DONE)
def stop_automl_job(job_name: str):
    try:
        boto3.client("sagemaker").stop_auto_ml_job(AutoMLJobName=job_name)
    except ClientError as error:
        # A job that has ended already: what the teardown wanted.
        answer = error.response["Error"]
        if answer["Code"] != "ValidationException" or "already reached a terminal state" not in answer["Message"]:
            raise
        log.info("AutoML job %s had ended already", job_name)


@task(trigger_rule=TriggerRule.ALL_DONE)
def delete_ecr_repository(repository_name: str):
    ecr = boto3.client("ecr")
    images = ecr.list_images(repositoryName=repository_name)["imageIds"]
    ecr.batch_delete_image(
        repositoryName=repository_name, imageIds=[{"imageDigest": image["imageDigest"]} for image in images]
    )
    ecr.delete_repository(repositoryName=repository_name)


@task(trigger_rule=TriggerRule.ALL_DONE)
def delete_model_group(group_name: str, model_version_arn: str):
    sagemaker = boto3.client("sagemaker")
    sagemaker.delete_model_package(ModelPackageName=model_version_arn)
    sagemaker.delete_model_package_group(ModelPackageGroupName=group_name)


@task(trigger_rule=TriggerRule.ALL_DONE)
def delete_experiments(experiment_names: list[str]):
    sagemaker = boto3.client("sagemaker")
    for experiment in experiment_names:
        for trial in sagemaker.list_trials(ExperimentName=experiment)["TrialSummaries"]:
            components = sagemaker.list_trial_components(TrialName=trial["TrialName"])["TrialComponentSummaries"]
            for component in components:
                sagemaker.disassociate_trial_component(
                    TrialComponentName=component["TrialComponentName"], TrialName=trial["TrialName"]
                )
                sagemaker.delete_trial_component(TrialComponentName=component["TrialComponentName"])
            sagemaker.delete_trial(TrialName=trial["TrialName"])
        sagemaker.delete_experiment(ExperimentName=experiment)


@task(trigger_rule=TriggerRule.ALL_DONE)
def delete_docker_image(image_name: str):
    # Registered, not built here: no local image to remove (the original only logs a failed `docker rmi`).
    log.info("no local Docker image of %s to remove: it was registered with localaws, not built here", image_name)


with DAG(dag_id=DAG_ID, schedule="@once", start_date=datetime(2021, 1, 1), tags=["example"], catchup=False) as dag:
    test_context = sys_test_context_task()
    env_id = test_context[ENV_ID_KEY]
    test_setup = set_up(env_id=env_id, role_arn=test_context[ROLE_ARN_KEY])

    create_bucket = S3CreateBucketOperator(task_id="create_bucket", bucket_name=test_setup["bucket_name"])
    upload_dataset = S3CreateObjectOperator(
        task_id="upload_dataset",
        s3_bucket=test_setup["bucket_name"],
        s3_key=test_setup["raw_data_s3_key"],
        data=generate_data(),
        replace=True,
    )
    automl = SageMakerAutoMLOperator(
        task_id="auto_ML",
        job_name=test_setup["auto_ml_job_name"],
        s3_input=test_setup["input_data_uri"],
        target_attribute="class",
        s3_output=test_setup["output_data_uri"],
        role_arn=test_context[ROLE_ARN_KEY],
        time_limit=AUTOML_SECONDS,
    )
    automl.wait_for_completion = False
    await_automl = SageMakerAutoMLSensor(job_name=test_setup["auto_ml_job_name"], task_id="await_auto_ML")
    await_automl.poke_interval = POKE_SECONDS
    create_experiment = SageMakerCreateExperimentOperator(
        task_id="create_experiment", name=test_setup["experiment_name"]
    )
    preprocess_raw_data = SageMakerProcessingOperator(
        task_id="preprocess_raw_data", config=test_setup["processing_config"]
    )
    preprocess_raw_data.wait_for_completion = False
    await_preprocess = SageMakerProcessingSensor(
        task_id="await_preprocess", job_name=test_setup["processing_job_name"], poke_interval=POKE_SECONDS
    )
    train_model = SageMakerTrainingOperator(
        task_id="train_model", config=test_setup["training_config"], check_interval=POKE_SECONDS
    )
    train_model.wait_for_completion = False
    await_training = SageMakerTrainingSensor(
        task_id="await_training", job_name=test_setup["training_job_name"], poke_interval=POKE_SECONDS
    )
    create_model = SageMakerModelOperator(task_id="create_model", config=test_setup["model_config"])
    register_model = SageMakerRegisterModelVersionOperator(
        task_id="register_model",
        image_uri=test_setup["inference_code_image"],
        model_url=test_setup["model_trained_weights"],
        package_group_name=test_setup["model_package_group_name"],
    )
    tune_model = SageMakerTuningOperator(task_id="tune_model", config=test_setup["tuning_config"])
    tune_model.wait_for_completion = False
    await_tuning = SageMakerTuningSensor(
        task_id="await_tuning", job_name=test_setup["tuning_job_name"], poke_interval=POKE_SECONDS
    )
    test_model = SageMakerTransformOperator(task_id="test_model", config=test_setup["transform_config"])
    test_model.wait_for_completion = False
    await_transform = SageMakerTransformSensor(
        task_id="await_transform", job_name=test_setup["transform_job_name"], poke_interval=POKE_SECONDS
    )
    delete_model = SageMakerDeleteModelOperator(task_id="delete_model", config={"ModelName": test_setup["model_name"]})
    delete_model.trigger_rule = TriggerRule.ALL_DONE
    delete_bucket = S3DeleteBucketOperator(
        task_id="delete_bucket",
        trigger_rule=TriggerRule.ALL_DONE,
        bucket_name=test_setup["bucket_name"],
        force_delete=True,
    )
    log_cleanup = prune_logs(
        [
            ("/aws/sagemaker/ProcessingJobs", env_id),
            ("/aws/sagemaker/TrainingJobs", env_id),
            ("/aws/sagemaker/TransformJobs", env_id),
        ]
    )

    chain(
        # set up
        test_context,
        test_setup,
        create_bucket,
        upload_dataset,
        # body
        automl,
        await_automl,
        create_experiment,
        preprocess_raw_data,
        await_preprocess,
        train_model,
        await_training,
        create_model,
        register_model,
        tune_model,
        await_tuning,
        test_model,
        await_transform,
        # teardown
        delete_ecr_repository(test_setup["ecr_repository_name"]),
        delete_model_group(test_setup["model_package_group_name"], register_model.output),
        delete_model,
        delete_bucket,
        stop_automl_job(test_setup["auto_ml_job_name"]),
        delete_experiments(
            [
                test_setup["experiment_name"],
                f"{test_setup['auto_ml_job_name']}-aws-auto-ml-job",
                f"{test_setup['tuning_job_name']}-aws-tuning-job",
            ]
        ),
        delete_docker_image(test_setup["docker_image"]),
        log_cleanup,
    )

    # Teardown tasks succeed whatever happened before them: the watcher fails the run when any task failed.
    list(dag.tasks) >> watcher()
