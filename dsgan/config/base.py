"""The base of every config model: unknown keys are errors, values are immutable once validated."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

NonNegativeFloat = Annotated[float, Field(ge=0)]


def expand_home(value: Any) -> Any:
    """`~` as a shell reads it. A YAML value is no shell word: `run.dir: ~/runs/x` would otherwise make a folder
    named `~` in the working directory (and `rm -r ~` is what its owner then types)."""
    return Path(value).expanduser() if isinstance(value, str | Path) else value


UserPath = Annotated[Path, BeforeValidator(expand_home)]


class Strict(BaseModel):
    # allow_inf_nan=False: no config float means anything as NaN or infinity (an infinite learning rate passes
    # `gt=0`, and NaN fails a bound with a message that hides what was wrong).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)
