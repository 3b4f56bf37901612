"""Serving a registered model: the raw-audio pyfunc, batch and windowed prediction, the per-clip checks."""

from typing import Any

# Models registered before the serving code became a package pickled their classes as
# components.serving.EmotionPyfunc (and friends); resolving those names here keeps them loading.
_MOVED_TO_PYFUNC = ("EmotionPyfunc", "EmotionPredictor", "MODEL_CONFIG")


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_PYFUNC:
        from components.serving import pyfunc

        return getattr(pyfunc, name)
    raise AttributeError(f"module 'components.serving' has no attribute {name!r}")
