"""Where rooms live and how writes reach them: message ids, placement, replication."""
