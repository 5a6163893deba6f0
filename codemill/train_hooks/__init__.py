"""Training hooks (not built yet): a deterministic, resumable, mixable torch
dataset over codemill's Arrow shards, and a Llama-style training loop with
long-context fine-tuning."""
