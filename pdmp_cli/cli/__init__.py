"""The command-line layer: each command is one module here, a thin wrapper over the library."""
