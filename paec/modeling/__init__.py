"""Models: loading a policy and its tokenizer from a folder or a built-in name (`loader`,
never from a hub at run time), small random models for tests and benchmarks, and LoRA
adapters (`lora`). Imports nothing of paec but `paec.modeling` and `paec.errors`."""
