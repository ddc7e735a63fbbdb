"""`Preset`: one named configuration of a model family, as the registry lists it."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Preset:
  """A module class with the attribute values that define a named model.

  Attributes:
    module: the flax module class.
    attrs: attribute values of this preset (the rest keep the class defaults).
    example_shape: an input shape (no batch axis) the preset is documented with.
    num_params: its parameter count on `example_shape` with `example_data` (tested).
    example_data: attributes that come from the data set, with the values of the documentation.
  """

  module: type
  attrs: dict
  example_shape: tuple[int, ...]
  num_params: int
  example_data: dict = dataclasses.field(default_factory=lambda: {"num_classes": 10})
