"""The base of every config model: unknown keys are errors, values are immutable once validated."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

NonNegativeFloat = Annotated[float, Field(ge=0)]


def expand_home(value: Any) -> Any:
    """`~` as a shell reads it. A YAML value is no shell word: `run.dir: ~/runs/x` would otherwise make a folder
    named `~` in the working directory (and `rm -r ~` is what its owner then types)."""
    return Path(value).expanduser() if isinstance(value, str | Path) else value


UserPath = Annotated[Path, BeforeValidator(expand_home)]


def _takes_bool(annotation: Any) -> bool:
    return annotation is bool or annotation is Any or any(_takes_bool(a) for a in get_args(annotation))


class Strict(BaseModel):
    # allow_inf_nan=False: no config float means anything as NaN or infinity (an infinite learning rate passes
    # `gt=0`, and NaN fails a bound with a message that hides what was wrong).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, data: Any) -> Any:
        """pydantic reads true as 1 for a number, and YAML reads yes/no/on/off as booleans: `keep_last: yes` would
        keep one checkpoint."""
        for name, value in data.items() if isinstance(data, dict) else ():
            field = cls.model_fields.get(name)
            if isinstance(value, bool) and field is not None and not _takes_bool(field.annotation):
                raise ValueError(
                    f"{name}={str(value).lower()}: expected a number or text, not a boolean (YAML reads yes/no/on/off "
                    "as booleans)"
                )
        return data
