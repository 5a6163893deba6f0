"""Luigi DAGs: thin tasks that wire stages together and write their outputs atomically."""
