"""Producer SDK and CLI: publish documents onto the ``documents`` topic."""
