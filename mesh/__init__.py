"""The meshchat node: storage, the client protocol, configuration and the command line."""
