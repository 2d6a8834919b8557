"""The export wing: the model bundle, and a whole project as one checked archive."""
