"""An image of localaws's own (a registered build context, or one pushed to the local registry) as a
record of moto's ECR, with its size as ECR gives it (the sum of its layers; moto's own records say
the size of their config). Its own module: it subclasses moto's record, and moto loads with the
gateway, not on import (``ecr_images`` imports this where it is used)."""

from __future__ import annotations

from moto.ecr.models import Image


class LocalImage(Image):
    def __init__(self, *, source: str, size: int | None, **fields):
        super().__init__(**fields)
        #: "context" (registered for the process runner) or "registry" (pushed to the local registry).
        self.source = source
        self.size = size

    def get_image_size_in_bytes(self) -> int | None:
        return self.size
