"""The node: the room driver and its disk, storage, the peer codec, config, metrics."""
