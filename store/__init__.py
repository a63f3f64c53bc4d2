"""store: what the API and the worker share — settings, job states and the error hierarchy.

The database models, migrations and artifact storage land here with the service (issue 4);
this package never imports torch, the API or the worker.
"""
