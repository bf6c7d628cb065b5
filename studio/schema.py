"""The one marker every config dataclass carries: validated by pydantic, with unknown keys forbidden.

>>> @config_class
... @dataclass
... class RunConfig:
...     steps: int = 100

The classes stay plain dataclasses for the code that builds them; :func:`studio.config.load_config`
validates what comes from a YAML file or ``key=value`` overrides through pydantic's ``TypeAdapter``
with this configuration.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import ConfigDict, with_config

T = TypeVar("T")
STRICT = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


def config_class(cls: type[T]) -> type[T]:
    """Mark a config dataclass for validation with unknown keys forbidden (pydantic's ``with_config``)."""
    return with_config(STRICT)(cls)
