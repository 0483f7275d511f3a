"""One node's view of the others: wire schema, transport, membership and failure detection."""
