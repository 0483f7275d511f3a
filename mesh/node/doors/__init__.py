"""The node's front doors: the TCP gateway and its sessions, the HTTP API, auth, rate limits."""
