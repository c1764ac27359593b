"""Models: the zoo of trainable architectures (:mod:`.zoo`), models robustcars did not train (:mod:`.external`),
checkpoints (:mod:`.checkpoint`) and where a model under evaluation comes from (:mod:`.source`).

Every model takes float32 ``(N, 3, H, W)`` pixels in [0, 1]: normalization is its first layer.
Layer: may import ``data`` and the foundations; never attacks, training, evaluation or reporting.
"""
