"""Building components from their `_target_` configs, with the component's own error on failure.

Hydra wraps any exception raised while instantiating in an `InstantiationException` whose text
repeats the target's path; xferlab's errors already name the file, key or value and the fix, so
they are re-raised as they are.
"""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate


def build(node: Any, **kwargs: Any) -> Any:
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (ValueError, FileNotFoundError, RuntimeError)):
            raise cause from None
        raise
