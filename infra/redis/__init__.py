"""Redis for the local stack (Debian's ``redis-server``): shared gateway rate limits."""
