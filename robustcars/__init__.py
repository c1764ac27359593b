"""robustcars: adversarial-robustness evaluation of fine-grained car classifiers (Stanford Cars).

The code is in layers; each may import only those below it (checked by ``lint-imports``, contracts in
``pyproject.toml``)::

    cli                      the command line: parse, validate, call the library, render
    web                      the web app (``robustcars serve``)
    evaluation               attack a split, resume, summarize, check; suites, transfer, the Python API, bench
    training                 the fine-tuning loop, adversarial training and distillation
    explain                  top-k predictions of photos, Grad-CAM, the car prefilter
    reporting | attacks      reading and drawing results | the attacks (two independent layers)
    models                   architectures, external models, checkpoints, model sources
    data                     Stanford Cars layouts, images as the model sees them
    config | lock | storage | runtime | console | version | progress    shared foundations
    registry | distributed | metrics
    errors
"""

from robustcars.version import __version__


def evaluate(*args, **kwargs):
    """Evaluate any classifier with robustcars' attacks; see :func:`robustcars.evaluation.api.evaluate`."""
    from robustcars.evaluation.api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


__all__ = ["evaluate", "__version__"]
