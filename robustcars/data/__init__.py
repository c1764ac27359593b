"""Data: Stanford Cars in its two layouts (:mod:`.cars`) and images as the model sees them (:mod:`.images`).

Layer: above the foundations (``errors``, ``registry``, ``config``, ``storage``, ...) only; it knows nothing of
models, attacks or results.
"""
