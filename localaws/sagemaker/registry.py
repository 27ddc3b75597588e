"""SageMaker's model registry: model package groups and the model packages (versions) in them.

A versioned model package belongs to a group and is numbered 1, 2, ... in it
(``arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>``,
lowercased as AWS writes it); an unversioned one has a name of its own
(``.../model-package/<name>``). Registration is bookkeeping only: nothing runs,
so a package is ``Completed`` as soon as it is created. Tags live in the
training backend's ``tags``, so AddTags/ListTags/DeleteTags work on these ARNs.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from dataclasses import dataclass, field

from localaws.sagemaker import listing
from localaws.sagemaker.errors import SageMakerError, ValidationError
from localaws.sagemaker.shapes import service_model

_MAX_ADDITIONAL_INFERENCE_SPECIFICATIONS = 15
_MAX_CUSTOMER_METADATA = 50


class ConflictException(SageMakerError):
    """What the registry's calls answer when the entity's state forbids the change."""

    code = "ConflictException"


@dataclass
class ModelPackageGroup:
    name: str
    arn: str
    request: dict
    created: float
    #: Versions are never reused, even after a version is deleted.
    next_version: int = 1

    def describe(self) -> dict:
        out: dict[str, object] = {
            "ModelPackageGroupName": self.name,
            "ModelPackageGroupArn": self.arn,
            "ModelPackageGroupDescription": self.request.get("ModelPackageGroupDescription"),
            "CreationTime": self.created,
            "CreatedBy": {},
            "ModelPackageGroupStatus": "Completed",
            "ManagedConfiguration": copy.deepcopy(self.request.get("ManagedConfiguration")),
        }
        return {key: value for key, value in out.items() if value is not None}

    def summary(self) -> dict:
        out = self.describe()
        del out["CreatedBy"]
        return out


@dataclass
class ModelPackage:
    arn: str
    #: The group's name for a versioned package (as AWS reports it), else the package's own name.
    name: str
    group: str | None
    version: int | None
    request: dict
    created: float
    seq: int
    approval: str | None = None
    approval_description: str | None = None
    customer_metadata: dict[str, str] = field(default_factory=dict)
    additional_inference: list[dict] = field(default_factory=list)
    #: What UpdateModelPackage replaced: InferenceSpecification, SourceUri, ModelCard, ...
    updated: dict = field(default_factory=dict)
    last_modified: float | None = None

    @property
    def versioned(self) -> bool:
        return self.version is not None

    def value(self, key: str):
        return self.updated[key] if key in self.updated else self.request.get(key)

    def describe(self) -> dict:
        out = {}
        # Everything the caller registered that DescribeModelPackage reports, as it was sent.
        output = service_model().operation_model("DescribeModelPackage").output_shape
        for key in output.members:
            if self.value(key) is not None:
                out[key] = copy.deepcopy(self.value(key))
        out.update(
            {
                "ModelPackageName": self.name,
                "ModelPackageArn": self.arn,
                "CreationTime": self.created,
                "ModelPackageStatus": "Completed",
                "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
                "CertifyForMarketplace": bool(self.request.get("CertifyForMarketplace", False)),
                "CreatedBy": {},
            }
        )
        if self.versioned:
            out["ModelPackageGroupName"] = self.group
            out["ModelPackageVersion"] = self.version
            out["ModelApprovalStatus"] = self.approval
        if self.approval_description is not None:
            out["ApprovalDescription"] = self.approval_description
        if self.customer_metadata:
            out["CustomerMetadataProperties"] = dict(self.customer_metadata)
        else:
            out.pop("CustomerMetadataProperties", None)
        if self.additional_inference:
            out["AdditionalInferenceSpecifications"] = copy.deepcopy(self.additional_inference)
        if self.last_modified is not None:
            out["LastModifiedTime"] = self.last_modified
            out["LastModifiedBy"] = {}
        return out

    def summary(self) -> dict:
        out = {
            "ModelPackageName": self.name,
            "ModelPackageGroupName": self.group,
            "ModelPackageVersion": self.version,
            "ModelPackageArn": self.arn,
            "ModelPackageDescription": self.request.get("ModelPackageDescription"),
            "CreationTime": self.created,
            "ModelPackageStatus": "Completed",
            "ModelApprovalStatus": self.approval,
            "ModelLifeCycle": copy.deepcopy(self.value("ModelLifeCycle")),
            "ModelPackageRegistrationType": self.value("ModelPackageRegistrationType"),
        }
        out = {key: value for key, value in out.items() if value is not None}
        # Sort keys (stripped before the page is answered): a group's versions in order.
        out["_by_name"] = (self.name, self.version or 0, self.seq)
        out["_by_time"] = (self.created, self.seq)
        return out


class RegistryBackend:
    """The account's model package groups and model packages in one region."""

    operations = (
        "CreateModelPackageGroup",
        "DescribeModelPackageGroup",
        "ListModelPackageGroups",
        "DeleteModelPackageGroup",
        "CreateModelPackage",
        "DescribeModelPackage",
        "ListModelPackages",
        "UpdateModelPackage",
        "DeleteModelPackage",
    )

    def __init__(self, training):
        """``training`` is the SageMakerBackend: it makes the ARNs and holds the tags and the lock."""
        self.training = training
        self.lock = training.lock
        self.groups: dict[str, ModelPackageGroup] = {}  # by ARN
        self.packages: dict[str, ModelPackage] = {}  # by ARN
        #: ClientToken -> (the package's ARN, the request it created it with).
        self.client_tokens: dict[str, tuple[str, str]] = {}
        self._seq = itertools.count()

    # --- across restarts (localaws/state) ------------------------------------------------------

    def state(self) -> dict:
        return {"groups": self.groups, "packages": self.packages, "client_tokens": self.client_tokens}

    def restore(self, state: dict) -> None:
        with self.lock:
            self.groups.update(state.get("groups", {}))
            self.packages.update(state.get("packages", {}))
            self.client_tokens.update(state.get("client_tokens", {}))
            self._seq = itertools.count(max((p.seq for p in self.packages.values()), default=-1) + 1)

    # --- names and ARNs ------------------------------------------------------------------

    def _group_arn(self, name_or_arn: str) -> str:
        if name_or_arn.startswith("arn:"):
            return name_or_arn.lower()
        return self.training.arn("model-package-group", name_or_arn)

    def _package_arn(self, name_or_arn: str) -> str:
        """A name, ``<group>/<version>`` or an ARN, as the ARN it names."""
        if name_or_arn.startswith("arn:"):
            return name_or_arn.lower()
        return self.training.arn("model-package", name_or_arn)

    def _group(self, name_or_arn: str) -> ModelPackageGroup:
        arn = self._group_arn(name_or_arn)
        group = self.groups.get(arn)
        if group is None:
            raise ValidationError(f"ModelPackageGroup {arn} does not exist.")
        return group

    def _package(self, name_or_arn: str) -> ModelPackage:
        arn = self._package_arn(name_or_arn)
        package = self.packages.get(arn)
        if package is None:
            raise ValidationError(f"ModelPackage {arn} does not exist.")
        return package

    # --- model package groups ------------------------------------------------------------

    def create_model_package_group(self, params: dict) -> dict:
        name = params["ModelPackageGroupName"]
        arn = self.training.arn("model-package-group", name)
        with self.lock:
            if arn in self.groups:
                raise ValidationError(f"Model Package Group already exists: {arn}")
            self.groups[arn] = ModelPackageGroup(name=name, arn=arn, request=params, created=time.time())
            self.training.tags[arn] = list(params.get("Tags", []))
        return {"ModelPackageGroupArn": arn}

    def describe_model_package_group(self, params: dict) -> dict:
        with self.lock:
            return self._group(params["ModelPackageGroupName"]).describe()

    def list_model_package_groups(self, params: dict) -> dict:
        with self.lock:
            summaries = [group.summary() for group in self.groups.values()]
        if params.get("CrossAccountFilterOption") == "CrossAccount":
            summaries = []  # nothing is shared with this account from another
        page, token = listing.page(
            summaries,
            params,
            name_key="ModelPackageGroupName",
            status_key=None,
            sort_keys={"Name": "ModelPackageGroupName", "CreationTime": "CreationTime"},
            default_sort="CreationTime",
        )
        return {"ModelPackageGroupSummaryList": page, **({"NextToken": token} if token else {})}

    def delete_model_package_group(self, params: dict) -> dict:
        with self.lock:
            group = self._group(params["ModelPackageGroupName"])
            versions = sum(1 for package in self.packages.values() if package.group == group.name)
            if versions:
                raise ConflictException(
                    f"Model Package Group {group.name} cannot be deleted because it contains {versions} "
                    "model package version(s). Delete the model package versions first."
                )
            del self.groups[group.arn]
            self.training.tags.pop(group.arn, None)
        return {}

    # --- model packages ------------------------------------------------------------------

    def create_model_package(self, params: dict) -> dict:
        _check_package_request(params)
        token = params.get("ClientToken")
        fingerprint = json.dumps(
            {key: value for key, value in params.items() if key != "ClientToken"}, sort_keys=True, default=str
        )
        with self.lock:
            if token and token in self.client_tokens:
                arn, earlier = self.client_tokens[token]
                if arn in self.packages:
                    if earlier != fingerprint:
                        raise ConflictException(
                            f"ClientToken {token} was already used to create {arn} with different parameters."
                        )
                    return {"ModelPackageArn": arn}
            if params.get("ModelPackageGroupName"):
                arn = self._group_arn(params["ModelPackageGroupName"])
                group = self.groups.get(arn)
                if group is None:
                    raise ValidationError("Model Package Group does not exist.")
                version = group.next_version
                package = ModelPackage(
                    arn=self.training.arn("model-package", f"{group.name}/{version}"),
                    name=group.name,
                    group=group.name,
                    version=version,
                    request=params,
                    created=time.time(),
                    seq=next(self._seq),
                    approval=params.get("ModelApprovalStatus") or "PendingManualApproval",
                )
                group.next_version += 1
            else:
                name = params["ModelPackageName"]
                arn = self.training.arn("model-package", name)
                if arn in self.packages:
                    raise ConflictException(f"Model Package already exists: {arn}")
                package = ModelPackage(
                    arn=arn,
                    name=name,
                    group=None,
                    version=None,
                    request=params,
                    created=time.time(),
                    seq=next(self._seq),
                )
            package.customer_metadata = dict(params.get("CustomerMetadataProperties") or {})
            package.additional_inference = copy.deepcopy(params.get("AdditionalInferenceSpecifications") or [])
            self.packages[package.arn] = package
            self.training.tags[package.arn] = list(params.get("Tags", []))
            if token:
                self.client_tokens[token] = (package.arn, fingerprint)
        return {"ModelPackageArn": package.arn}

    def describe_model_package(self, params: dict) -> dict:
        with self.lock:
            return self._package(params["ModelPackageName"]).describe()

    def list_model_packages(self, params: dict) -> dict:
        group_ref = params.get("ModelPackageGroupName")
        # AWS: Unversioned unless asked otherwise, but a group's listing is of its versions.
        kind = params.get("ModelPackageType") or ("Versioned" if group_ref else "Unversioned")
        group_arn = self._group_arn(group_ref) if group_ref else None
        with self.lock:
            group = self.groups.get(group_arn) if group_arn else None
            summaries = []
            for package in self.packages.values():
                if group_ref and (group is None or package.group != group.name):
                    continue
                if kind == "Versioned" and not package.versioned or kind == "Unversioned" and package.versioned:
                    continue
                if params.get("ModelApprovalStatus") and package.approval != params["ModelApprovalStatus"]:
                    continue
                summaries.append(package.summary())
        page, token = listing.page(
            summaries,
            params,
            name_key="ModelPackageName",
            status_key=None,
            sort_keys={"Name": "_by_name", "CreationTime": "_by_time"},
            default_sort="CreationTime",
        )
        for summary in page:
            summary.pop("_by_name")
            summary.pop("_by_time")
        return {"ModelPackageSummaryList": page, **({"NextToken": token} if token else {})}

    def update_model_package(self, params: dict) -> dict:
        adding = params.get("CustomerMetadataProperties") or {}
        removing = params.get("CustomerMetadataPropertiesToRemove") or []
        both = sorted(set(adding) & set(removing))
        if both:
            raise ValidationError(
                f"CustomerMetadataProperties and CustomerMetadataPropertiesToRemove both name {', '.join(both)}."
            )
        with self.lock:
            package = self._package(params["ModelPackageArn"])
            if params.get("ModelApprovalStatus") and not package.versioned:
                raise ValidationError(
                    "ModelApprovalStatus applies to versioned model packages only (those in a model package group)."
                )
            metadata = {key: value for key, value in package.customer_metadata.items() if key not in removing}
            metadata.update(adding)
            if len(metadata) > _MAX_CUSTOMER_METADATA:
                raise ValidationError(
                    f"A model package can have at most {_MAX_CUSTOMER_METADATA} CustomerMetadataProperties "
                    f"({len(metadata)} after this update)."
                )
            extra = params.get("AdditionalInferenceSpecificationsToAdd") or []
            if len(package.additional_inference) + len(extra) > _MAX_ADDITIONAL_INFERENCE_SPECIFICATIONS:
                raise ValidationError(
                    "The total number of additional inference specifications cannot exceed "
                    f"{_MAX_ADDITIONAL_INFERENCE_SPECIFICATIONS}."
                )
            if params.get("InferenceSpecification"):
                _check_containers(params["InferenceSpecification"])
            if params.get("ModelApprovalStatus"):
                package.approval = params["ModelApprovalStatus"]
            if "ApprovalDescription" in params:
                package.approval_description = params["ApprovalDescription"]
            package.customer_metadata = metadata
            package.additional_inference.extend(copy.deepcopy(extra))
            for key in (
                "InferenceSpecification",
                "SourceUri",
                "ModelCard",
                "ModelLifeCycle",
                "ModelPackageRegistrationType",
            ):
                if params.get(key) is not None:
                    package.updated[key] = copy.deepcopy(params[key])
            package.last_modified = time.time()
            return {"ModelPackageArn": package.arn}

    def delete_model_package(self, params: dict) -> dict:
        with self.lock:
            package = self._package(params["ModelPackageName"])
            del self.packages[package.arn]
            self.training.tags.pop(package.arn, None)
        return {}


def _check_containers(specification: dict) -> None:
    for container in specification.get("Containers", []):
        if not container.get("Image"):
            raise ValidationError("Each container in InferenceSpecification.Containers needs an Image.")


def _check_package_request(params: dict) -> None:
    """Rules across members that botocore's model cannot express."""
    group, name = params.get("ModelPackageGroupName"), params.get("ModelPackageName")
    if group and name:
        raise ValidationError(
            "Both ModelPackageName and ModelPackageGroupName are provided in the input. "
            "Cannot determine which one to use."
        )
    if not group and not name:
        raise ValidationError("Missing ARN.")
    if params.get("SourceAlgorithmSpecification") or params.get("ValidationSpecification"):
        raise ValidationError(
            "localaws registers models built from your own images only: SourceAlgorithmSpecification "
            "(algorithm resources) and ValidationSpecification (validation transform jobs) are not supported."
        )
    specification = params.get("InferenceSpecification")
    if specification:
        _check_containers(specification)
    if name:  # unversioned
        if not specification:
            raise ValidationError(
                "An unversioned model package needs an InferenceSpecification or a SourceAlgorithmSpecification."
            )
        if any(container.get("Environment") for container in specification["Containers"]):
            raise ValidationError(
                "1 validation errors detected:Environment variable map cannot be specified when using "
                "non-versioned ModelPackages"
            )
        if params.get("ModelApprovalStatus"):
            raise ValidationError(
                "ModelApprovalStatus applies to versioned model packages only (those in a model package group)."
            )
