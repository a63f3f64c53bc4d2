"""Typed configuration of a training run: `training.TrainConfig` holds the run, with PAEC's
settings (`calibration.PAECConfig`) and the policy loss's (`loss.PolicyLossConfig`) inside;
`checks` is their one validation vocabulary (errors are `paec.errors.ConfigError`).

Torch-free (the API validates hyperparameters with these very classes); imports nothing of
paec but `paec.config` and `paec.errors`."""
