"""Self-instruct (not built yet): a model writes questions, unit tests and ten
solutions per question; solutions run in an isolating sandbox; the first that
passes is kept (Code Llama §2.5)."""
