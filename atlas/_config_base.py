"""The base of every config model (kept apart so stage packages can define their settings without import cycles)."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base for all config models: unknown fields are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
