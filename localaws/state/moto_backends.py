"""moto's state: every service's backends (plain Python objects), pickled together and put back.

moto keeps each service's state in a module-level ``BackendDict`` (account -> region -> backend);
the ones in use are listed in ``BackendDict._instances``. They are pickled in one go, so an object
that two services share stays one object, each BackendDict itself by reference (its module and
name); loading puts the accounts back into the live BackendDicts before the first request. A
service whose state cannot be pickled is left out (and logged once), not the whole snapshot.

The file starts with one line of JSON saying what wrote it (the format, moto's and Python's
versions), read before anything is unpickled: a snapshot of another moto or Python is refused
without loading its objects (or its S3 bodies) at all.
"""

from __future__ import annotations

import json
import logging
import pickle
import sys
from typing import TYPE_CHECKING, Any

from localaws.state import pickling

if TYPE_CHECKING:
    from moto.core.base_backend import BackendDict

log = logging.getLogger(__name__)

FORMAT = 2
_MAGIC = b"localaws-moto-state "


def _moto_version() -> str:
    import moto  # noqa: PLC0415

    return moto.__version__


def _header() -> bytes:
    versions = {"format": FORMAT, "moto": _moto_version(), "python": "%d.%d" % sys.version_info[:2]}
    return _MAGIC + json.dumps(versions, sort_keys=True).encode() + b"\n"


def _instances() -> list[BackendDict[Any]]:
    """moto's list of the BackendDicts in use (the live list: appending to it registers one)."""
    from moto.core.base_backend import BackendDict  # noqa: PLC0415

    # A class variable of a generic class: read as moto reads it itself (BackendDict.reset).
    return BackendDict._instances  # type: ignore[misc]


class MotoState:
    def __init__(self):
        self._where: dict[int, tuple[str, str]] = {}  # id(BackendDict) -> (module, name)
        self._left_out: set[str] = set()

    def _locate(self, backend_dict) -> tuple[str, str] | None:
        found = self._where.get(id(backend_dict))
        if found:
            return found
        module_name = backend_dict.backend.__module__
        candidates = [module_name, module_name.rsplit(".", 1)[0]]
        candidates += [name for name in list(sys.modules) if name.startswith("moto.") and name not in candidates]
        for candidate in candidates:
            module = sys.modules.get(candidate)
            for attribute, value in list(vars(module).items()) if module else ():
                if value is backend_dict:
                    self._where[id(backend_dict)] = (candidate, attribute)
                    return candidate, attribute
        return None

    def _in_use(self) -> dict[tuple[str, str], BackendDict[Any]]:
        found = {}
        for backend_dict in list(_instances()):
            where = self._locate(backend_dict)
            if where is None:
                if backend_dict.service_name not in self._left_out:
                    self._left_out.add(backend_dict.service_name)
                    log.error(
                        "localaws state: cannot tell where moto keeps %s; it is not persisted",
                        backend_dict.service_name,
                    )
                continue
            if where[0] + "." + where[1] not in self._left_out:
                found[where] = backend_dict
        return found

    @staticmethod
    def backends() -> int:
        """How many (service, account, region) backends moto has made: a read can make one (the first
        DescribeVpcs makes EC2's, with a default VPC of random id), and that is state to keep too."""
        return sum(len(backends) for backend_dict in list(_instances()) for backends in list(dict.values(backend_dict)))

    def dump(self, blobs: pickling.Blobs) -> bytes:
        """Every service's state in one pickle (new S3 bodies listed in ``blobs.new``, not written)."""
        backend_dicts = self._in_use()
        refs = {id(value): where for where, value in backend_dicts.items()}
        services = {where: dict(dict.items(value)) for where, value in backend_dicts.items()}
        try:
            return _header() + pickling.dumps(services, blobs=blobs, backend_dicts=refs)
        except (pickle.PicklingError, TypeError, AttributeError) as error:
            bad = [where for where, accounts in services.items() if not self._picklable(accounts, refs)]
            if not bad:
                raise
            for where in bad:
                self._left_out.add(where[0] + "." + where[1])
                log.error(
                    "localaws state: moto's %s.%s cannot be persisted (%s); the other services are", *where, error
                )
            blobs.new.clear()
            blobs.referenced.clear()
            return self.dump(blobs)

    @staticmethod
    def _picklable(accounts, refs) -> bool:
        try:
            pickling.dumps(accounts, blobs=pickling.Blobs(), backend_dicts=refs)
            return True
        except (pickle.PicklingError, TypeError, AttributeError):
            return False

    @staticmethod
    def load(data: bytes, blobs: pickling.Blobs) -> dict:
        """Put a snapshot's accounts into moto's live BackendDicts; what it held, per service."""
        from moto.core.base_backend import backend_lock  # noqa: PLC0415

        line, _, pickled = data.partition(b"\n")
        if not line.startswith(_MAGIC):
            raise ValueError("not a snapshot of this localaws's (no header: an older format or another file)")
        written = json.loads(line[len(_MAGIC) :])
        if written != json.loads(_header()[len(_MAGIC) :]):
            raise ValueError(
                f"the snapshot was written by moto {written.get('moto')} on Python {written.get('python')} "
                f"(format {written.get('format')}); this is moto {_moto_version()} on Python "
                f"{sys.version_info[0]}.{sys.version_info[1]} (format {FORMAT})"
            )
        services = pickling.loads(pickled, blobs)
        held = {}
        with backend_lock:
            for (module, name), accounts in services.items():
                live = pickling._backend_dict(module, name)
                for account, backends in accounts.items():
                    dict.__setitem__(live, account, backends)
                if live not in _instances():
                    _instances().append(live)
                held[live.service_name] = sum(len(backends) for backends in accounts.values())
        return held
