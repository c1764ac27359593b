"""Evaluation: attacking a split and scoring it (:mod:`.runner`), its resume state (:mod:`.resume`), the summary
(:mod:`.summary`) and checks (:mod:`.checks`) of a result, suites and cascades (:mod:`.suite`), saved adversarial
examples (:mod:`.saved`) and transfer (:mod:`.transfer`), model cards (:mod:`.model_card`), the figures of an
attack folder (:mod:`.panels`), the Python API (:mod:`.api`) and throughput benchmarks (:mod:`.bench`).

Layer: may import ``training`` (the benchmark's training step), ``explain``, ``reporting``, ``attacks``,
``models``, ``data`` and the foundations; never ``web`` or ``cli``.
"""
