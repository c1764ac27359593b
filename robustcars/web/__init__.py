"""``robustcars serve``: the web app (FastAPI on uvicorn) for inference, live attacks and training jobs."""
