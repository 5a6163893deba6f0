"""Luigi DAGs: one generic task (`task.RunStage`) that runs any registered stage and
commits its output atomically, and the two DAGs' entry points (`pretrain`,
`selfinstruct`)."""
