"""The `paec` command's commands, one module per group (files, jobs, checkpoints,
evaluations and graders). Each command is a function `(Client, argparse.Namespace) -> exit
code` that client/cli.py's parser names as the handler of its command line."""
