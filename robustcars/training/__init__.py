"""Training: the fine-tuning loop (:mod:`.loop`) and the defences it can train with — adversarial training and
distillation (:mod:`.defences`).

Layer: may import ``explain``, ``reporting`` (learning-curve figures), ``attacks``, ``models``, ``data`` and the
foundations; never ``evaluation``, ``web`` or ``cli``.
"""
