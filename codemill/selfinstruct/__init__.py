"""Self-instruct (Code Llama §2.5): a model writes interview-style questions, unit tests
and ten solutions per question; solutions run in an isolating sandbox (`sandbox`);
the first that passes is kept. `prompts` and `parse` hold the Llama-2-chat templates
and forgiving parsers, `backends` the model backends with an on-disk call cache,
`pipeline` the record-level kernels. The stages are in `codemill.stages.selfinstruct`,
the DAG in `codemill.pipelines.selfinstruct` (`codemill selfinstruct`)."""
