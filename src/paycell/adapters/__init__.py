"""Adapters: storage backends, the CLI, and (later) HTTP, translating to and from the core."""
