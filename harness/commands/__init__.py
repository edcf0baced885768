"""One module per ``sfh`` subcommand; each defines ``register(subparsers)``."""
