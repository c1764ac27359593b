"""robustcars: adversarial-robustness evaluation of fine-grained car classifiers (Stanford Cars)."""

__version__ = "0.1.0"
