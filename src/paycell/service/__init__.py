"""The application layer: prefetch what a command touches, run the pure core, commit once."""
