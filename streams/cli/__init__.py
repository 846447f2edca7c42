"""The `opsloop` command line: argument parsing and thin shells over the other layers."""
