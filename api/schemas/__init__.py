"""The API's wire format as Pydantic models: what each route reads and what it answers, so
that `/openapi.json` (and `/docs`) describe every request and response body.

One module per noun: `jobs` (and `hyperparameters`), `files`, `events`, `checkpoints`,
`permissions`, `graders`, `evaluations`, `metrics`, `health`, and `errors` (the OpenAI error
envelope); `common` holds the base classes. Request models refuse unknown fields where the
route always has (jobs, evaluations, permissions) and ignore them where it always has
(graders, the upload form). Response models mirror the dicts the `store` builds; routes
return those dicts with `response_model_exclude_unset`, so the wire carries exactly the keys
the store wrote. Graders and hyperparameters are JSON objects here, described in full for
the reader but validated by the trainer's own code (`paec.grading`, `TrainConfig`) through
`store`.
"""
