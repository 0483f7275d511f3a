"""The client library: connections, the chat client with failover and gap-free resume."""
