"""Tools built on the client library: the terminal chat tool."""
