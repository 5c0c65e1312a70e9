"""The building blocks of the settings models: the section base (frozen, no unknown keys,
an empty YAML section meaning its defaults) and the value types the sections share."""

from __future__ import annotations

import re
import typing
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo

INSTANCE_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # an instance id, as the fleet keys hold it


def not_bool(value: Any) -> Any:
    """Before-validator for numbers: YAML true/false is not 1/0 here.

    ValueError, not TypeError: pydantic turns only ValueError into a validation error.
    """
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")  # noqa: TRY004 - see docstring
    return value


def as_number(value: Any) -> Any:
    """Before-validator for Decimal fields: floats via str(), so 0.1 stays Decimal('0.1')."""
    value = not_bool(value)
    return Decimal(str(value)) if isinstance(value, float) else value


Dec = Annotated[Decimal, BeforeValidator(as_number), Field(allow_inf_nan=False)]
PositiveDecimal = Annotated[Dec, Field(gt=0)]
NonNegativeDecimal = Annotated[Dec, Field(ge=0)]
Float = Annotated[float, BeforeValidator(not_bool), Field(allow_inf_nan=False)]
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegativeFloat = Annotated[Float, Field(ge=0)]
Seconds = PositiveFloat  # durations are seconds as float
NonNegativeSeconds = NonNegativeFloat
Count = Annotated[int, BeforeValidator(not_bool), Field(ge=1)]
NonNegativeInt = Annotated[int, BeforeValidator(not_bool), Field(ge=0)]


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _empty_means_defaults(cls, data: Any) -> Any:
        """A section or mapping left empty in YAML (``redis:`` + comments) takes defaults."""
        if not isinstance(data, dict):
            return data
        return {
            key: value
            for key, value in data.items()
            if value is not None or not _is_mapping_field(cls.model_fields.get(str(key)))
        }


def _is_mapping_field(field: FieldInfo | None) -> bool:
    annotation = field.annotation if field is not None else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return typing.get_origin(annotation) is dict
