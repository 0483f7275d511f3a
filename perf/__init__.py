"""Performance and timing measurements of meshchat."""
