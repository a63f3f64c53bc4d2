"""store: the domain the API and the worker share: settings, database models and sessions,
job states and transitions, files, checkpoints, metrics and events, the queue's names, and
the service's error hierarchy (`store.errors`).

It imports, of paec, only the torch-free packages (config, grading, data, errors), to
validate what the API accepts with the trainer's own code; never torch, the API or the
worker.
"""
