"""``robustcars serve``: the web app (FastAPI on uvicorn) for inference, live attacks and training jobs.

Layer: below ``cli`` only; may import ``evaluation``, ``training``, ``explain``, ``reporting``, ``attacks``,
``models``, ``data`` and the foundations. Training jobs run ``robustcars train`` in a process of their own.
"""
