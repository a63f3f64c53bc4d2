"""api: the HTTP face of paec (FastAPI). Imports store/, never torch, paec/ or worker/.

Run it with `uvicorn api.app:app`: OpenAI's fine-tuning API under /v1, native routes under
/api (api/routes), their bodies typed in api/schemas.
"""
