"""The meshchat command line."""
