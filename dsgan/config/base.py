"""The base of every config model: unknown keys are errors, values are immutable once validated."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NonNegativeFloat = Annotated[float, Field(ge=0)]


class Strict(BaseModel):
    # allow_inf_nan=False: no config float means anything as NaN or infinity (an infinite learning rate passes
    # `gt=0`, and NaN fails a bound with a message that hides what was wrong).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)
