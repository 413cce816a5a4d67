"""Settings of the simulator (``atlas simulate`` and a pipeline's ``simulate`` section)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_serializer

from ..core.errors import ConfigError
from ..core.settings import StrictModel
from .difficulty import Difficulty as DifficultySettings


class SimulateConfig(StrictModel):
    """Parameters of the ground-truth simulator (``atlas simulate``)."""

    n_cells: int = Field(20_000, ge=200)
    n_datasets: int = Field(8, ge=1)
    n_genes: int = Field(15_000, ge=2_000)
    seed: int = 0
    chunk_size: int = Field(20_000, ge=100)
    difficulty: str | DifficultySettings = Field(
        "default",
        description="preset (default, weak_markers, confounded, hard) or a mapping of difficulty knobs "
        "(atlas.simulate.Difficulty: marker_strength, ambient_fraction, ...); unknown knobs are errors",
    )

    @field_validator("difficulty", mode="before")
    @classmethod
    def _known_difficulty(cls, v: Any) -> Any:
        try:
            d = DifficultySettings.resolve(v, "simulate.difficulty")
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return v if isinstance(v, str) else d

    @model_serializer(mode="wrap")
    def _drop_default_difficulty(self, handler) -> dict[str, Any]:
        # The default difficulty is left out, so the settings (and stage hashes) of earlier configs stay the same.
        data = handler(self)
        if DifficultySettings.resolve(self.difficulty).is_default:
            data.pop("difficulty", None)
        return data
