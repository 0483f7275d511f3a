"""What both sides of the client protocol share: messages, frames, error codes, names."""
