"""api: the HTTP face of paec (FastAPI). Imports store/, never torch, paec/ or worker/.

Run it with `uvicorn api.app:app`. The /v1 OpenAI-compatible routes land with issue 4.
"""
