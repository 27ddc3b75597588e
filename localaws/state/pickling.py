"""How localaws's state is pickled: moto's backends as they are, our engine's records by their fields.

Plain ``pickle`` nearly works on both; what it gets wrong is handled here:

* locks (moto's backends and objects hold them) come back as fresh, unlocked ones;
* moto's dict subclasses are pickled by their raw storage: ``_VersionedKeyStore.items()`` yields
  only each key's latest version and ``ParameterDict.__init__`` takes arguments a plain unpickle
  would not pass;
* a ``defaultdict`` whose factory is a lambda (moto's SSM tags, Lambda aliases) comes back with a
  factory that copies what the lambda made;
* an S3 object's body (``FakeKey``'s ``SpooledTemporaryFile``) is not in the pickle: it is a blob
  file of its own, written once (an object's bytes never change in moto: a new put is a new key),
  so a snapshot costs the metadata, not the data;
* AWS's managed IAM policies (some 1,600 documents in every account's IAM, most of moto's pickle)
  are pickled by name with what an account changes of them (attachments, tags) and made again from
  moto's own data when loaded, one object still wherever it is attached;
* our engine's dataclasses are pickled as their fields minus the ones marked ``RUNTIME`` (threads'
  events, running instances, clocks that mean nothing in another process) and rebuilt with the
  defaults of fields they lack, so a snapshot survives a field added to the code.
"""

from __future__ import annotations

import contextvars
import copy
import dataclasses
import functools
import importlib
import io
import json
import pickle
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:
    from moto.s3.models import FakeKey

#: Field metadata of what is not persisted: the field comes back as its default (None if it has none).
RUNTIME = {"localaws.state": "runtime"}

#: A FakeKey's attribute of ours (in its __dict__: moto knows nothing of it): the blob file of its body.
BLOB_NAME = "_localaws_blob"
_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))
#: Modules whose dataclasses are our engine's persisted records; any other object of ours is refused.
_RECORD_MODULES = (
    "localaws.sagemaker.models",
    "localaws.sagemaker.processing_models",
    "localaws.sagemaker.tuning.models",
    "localaws.sagemaker.hosting.models",
    "localaws.sagemaker.transform.models",
    "localaws.applicationautoscaling.models",
    "localaws.sagemaker.registry",
    "localaws.ssm.models",
)


_T = TypeVar("_T")


# Typed as typeshed types dataclasses.field (the default's type), so that mypy checks the default against the
# field's annotation.
@overload
def runtime(*, default: _T) -> _T: ...
@overload
def runtime(*, default_factory: Callable[[], _T]) -> _T: ...
def runtime(**kwargs: Any) -> Any:
    """A dataclass field that lives only as long as the process (not persisted), with a default or a
    default_factory. One without a default is ``dataclasses.field(metadata=RUNTIME)``: mypy's dataclass
    support knows that ``field`` call has none, not this one."""
    return dataclasses.field(metadata=RUNTIME, **kwargs)


# --- rebuilding (module-level: the pickle names these functions) ------------------------------


def _new(cls):
    return cls.__new__(cls)


def _fill_record(obj, values: dict) -> None:
    for item in dataclasses.fields(obj):
        if item.name in values:
            value = values[item.name]
        elif item.default is not dataclasses.MISSING:
            value = item.default
        elif item.default_factory is not dataclasses.MISSING:
            value = item.default_factory()
        else:
            value = None
        object.__setattr__(obj, item.name, value)


def _fill_moto_dict(obj, state) -> None:
    items, attributes, factory = state
    dict.update(obj, items)
    obj.__dict__.update(attributes)
    if factory is not None:
        obj.default_factory = factory


def _defaultdict_like(template, items):
    made = defaultdict(functools.partial(copy.deepcopy, template))
    dict.update(made, items)
    return made


def _local_factory(factory) -> bool:
    name = getattr(factory, "__qualname__", "")
    return "<lambda>" in name or "<locals>" in name


def _portable_factory(factory):
    """A picklable factory that makes what ``factory`` makes."""
    if factory is None or not _local_factory(factory):
        return factory
    return functools.partial(copy.deepcopy, factory())


def _rebuild_key(cls, state: dict, name: str):
    blobs = _LOADING.get()
    try:
        data = blobs.read(name)
    except FileNotFoundError:
        blobs.missing.append(name)
        data = b""
    blobs.referenced.add(name)
    key = cls.__new__(cls)
    key.__setstate__({**state, "value": data})
    key.__dict__[BLOB_NAME] = name
    return key


def _aws_managed_policy(account_id: str, partition: str, name: str, policy_id: str, attachment_count: int, tags: dict):
    from moto.iam.models import AWSManagedPolicy  # noqa: PLC0415

    blobs = _LOADING.get()
    if blobs.aws_policies is None:  # parsed once per load
        from moto.iam.aws_managed_policies import aws_managed_policies_data  # noqa: PLC0415

        blobs.aws_policies = json.loads(aws_managed_policies_data)
    # moto's IAM has a backend per partition, named by it: its policies' ARNs are that partition's
    policy = AWSManagedPolicy.from_data(name, account_id, partition, blobs.aws_policies[name])
    policy.id, policy.attachment_count, policy.tags = policy_id, attachment_count, tags
    return policy


def _backend_dict(module: str, name: str):
    """The live BackendDict ``module.name``: a pickle refers to moto's BackendDicts, never copies them."""
    return getattr(importlib.import_module(module), name)


class Blobs:
    """The blob files of S3 object bodies that a pickle of moto's state refers to."""

    def __init__(self, read=None):
        self.read = read  # name -> bytes, when loading
        self.referenced: set[str] = set()
        #: (FakeKey, new blob name): to be written before the snapshot may be committed.
        self.new: list[tuple[FakeKey, str]] = []
        self.missing: list[str] = []
        #: moto's AWS managed policies' data, parsed when a pickle names one.
        self.aws_policies: dict | None = None


_LOADING: contextvars.ContextVar[Blobs] = contextvars.ContextVar("localaws_state_blobs")


class StatePickler(pickle.Pickler):
    # Everything is done in reducer_override: a persistent_id() would be a Python call per object.

    def __init__(self, file, blobs: Blobs | None = None, backend_dicts: dict | None = None):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.blobs = blobs
        #: id(BackendDict) -> (module, name) where it lives.
        self.backend_dicts = backend_dicts or {}
        self._fake_key = self._aws_policy = None
        if blobs is not None:  # only when moto's state is pickled
            from moto.iam.models import AWSManagedPolicy  # noqa: PLC0415
            from moto.s3.models import FakeKey  # noqa: PLC0415

            self._fake_key, self._aws_policy = FakeKey, AWSManagedPolicy

    def reducer_override(self, obj):
        kind = type(obj)
        if kind in _LOCK_TYPES:
            return kind, ()
        module = kind.__module__
        if module.startswith("localaws."):
            if dataclasses.is_dataclass(obj) and module in _RECORD_MODULES:
                values = {
                    item.name: getattr(obj, item.name)
                    for item in dataclasses.fields(obj)
                    if item.metadata.get("localaws.state") != "runtime"
                }
                return _new, (kind,), values, None, None, _fill_record
            raise pickle.PicklingError(f"{module}.{kind.__qualname__} is not persisted state")
        if kind is self._fake_key:
            return self._reduce_key(obj)
        if kind is self._aws_policy and len(obj.versions) == 1:
            # AWS's as moto's data has it (a policy given a version of someone's is pickled whole)
            return _aws_managed_policy, (
                obj.account_id,
                obj.partition,
                obj.name,
                obj.id,
                obj.attachment_count,
                obj.tags,
            )
        if isinstance(obj, dict):
            if id(obj) in self.backend_dicts:
                return _backend_dict, self.backend_dicts[id(obj)]
            if module.startswith("moto."):
                factory = _portable_factory(obj.default_factory) if isinstance(obj, defaultdict) else None
                state = (list(dict.items(obj)), dict(obj.__dict__), factory)
                return _new, (kind,), state, None, None, _fill_moto_dict
            if kind is defaultdict and _local_factory(obj.default_factory):
                return _defaultdict_like, (obj.default_factory(), list(obj.items()))
        return NotImplemented

    def _reduce_key(self, key):
        state = {
            name: value for name, value in key.__dict__.items() if name not in ("_value_buffer", "lock", BLOB_NAME)
        }
        name = key.__dict__.get(BLOB_NAME)
        if name is None:
            name = uuid.uuid4().hex
            self.blobs.new.append((key, name))
        self.blobs.referenced.add(name)
        return _rebuild_key, (type(key), state, name)


def dumps(obj, **kwargs) -> bytes:
    buffer = io.BytesIO()
    StatePickler(buffer, **kwargs).dump(obj)
    return buffer.getvalue()


def loads(data: bytes, blobs: Blobs | None = None):
    token = _LOADING.set(blobs or Blobs())
    try:
        return pickle.loads(data)
    finally:
        _LOADING.reset(token)
