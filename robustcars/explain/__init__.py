"""Explain: top-k predictions for any photo (:mod:`.photos`), Grad-CAM of clean vs adversarial images
(:mod:`.gradcam`) and the non-car prefilter (:mod:`.prefilter`).

None of these functions changes a model's train/eval mode, its weights' ``requires_grad`` or ``.grad``, or its
buffers. Layer: may import ``reporting`` (figures), ``attacks``, ``models``, ``data`` and the foundations.
"""
