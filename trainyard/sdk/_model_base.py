"""The base of every response model: extra fields allowed, so a newer server never breaks an
older client."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class TrainyardModel(BaseModel):
    # protected_namespaces=(): job specs carry fields such as `model_parameters`.
    model_config = ConfigDict(extra="allow", populate_by_name=True, protected_namespaces=())

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict, extra fields included."""
        return self.model_dump(mode="json")


T = TypeVar("T", bound=TrainyardModel)

# A timestamp when it parses, the raw text otherwise, so a report never fails to load over one
# odd value. Left to right: pydantic's default "smart" union would keep every string a string.
TimeOrText = Annotated[datetime | str | None, Field(union_mode="left_to_right")]
