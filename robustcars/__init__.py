"""robustcars: adversarial-robustness evaluation of fine-grained car classifiers (Stanford Cars)."""

__version__ = "0.2.0"


def evaluate(*args, **kwargs):
    """Evaluate any classifier with robustcars' attacks; see :func:`robustcars.api.evaluate`."""
    from .api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


__all__ = ["evaluate", "__version__"]
