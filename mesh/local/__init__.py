"""Local meshes: node processes started on this machine, for `meshchat up`, tests and benchmarks."""
