"""Picking the runner for an image: a container when a Docker engine has or can pull it,
else a process from its registered build context."""

from __future__ import annotations

import logging
import threading

from localaws.image_contexts import ImageContexts
from localaws.leftovers import WORK_DIR_LABEL
from localaws.sagemaker.runners.base import ImageNotFound, Runner
from localaws.sagemaker.runners.process import ProcessRunner, VirtualEnvs

log = logging.getLogger(__name__)


class Runners:
    def __init__(self, settings, contexts: ImageContexts):
        self.settings = settings
        self.process = ProcessRunner(contexts, VirtualEnvs(settings.cache_dir / "venvs"), log=log.info)
        self._docker = None
        self._lock = threading.Lock()

    def docker(self):
        with self._lock:
            if self._docker is None:
                # The Docker SDK loads only where a Docker runner is asked for.
                from localaws.sagemaker.runners.docker import DockerRunner, engine_available  # noqa: PLC0415

                if not engine_available(self.settings.docker_host):
                    return None
                # Labelled with the work dir, so the next start finds what a killed localaws left.
                self._docker = DockerRunner(
                    base_url=self.settings.docker_host,
                    registry=self.settings.registry,
                    labels={WORK_DIR_LABEL: str(self.settings.work_dir)},
                )
            return self._docker

    def __call__(self, image: str) -> Runner:
        """The runner for ``image``, with the image ready to start (pulled, or its environment built)."""
        mode = self.settings.runner
        if mode in ("auto", "docker"):
            docker = self.docker()
            if docker is None and mode == "docker":
                raise ImageNotFound("LOCALAWS_RUNNER=docker but no Docker engine answers.")
            if docker is not None:
                try:
                    docker.resolve_image(image)
                    return docker
                except ImageNotFound as error:
                    if mode == "docker" or not self.process.can_run(image):
                        raise
                    log.info("%s cannot run in the Docker engine (%s): running it as a process", image, error)
        self.process.prepare(image, log=log.info)
        return self.process

    def close(self) -> None:
        self.process.close()
        if self._docker is not None:
            self._docker.close()
