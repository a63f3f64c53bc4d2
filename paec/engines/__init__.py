"""Rollout engines: samplers that run outside the trainer's PyTorch model.

`paec.engines.vllm` drives vLLM in a process of its own, started with the python of a separate
virtualenv (`make vllm-venv`), because vLLM pins torch, transformers and fastapi versions that
the project's own environment cannot hold. `paec.engines.vllm_server` is the script that
process runs."""
