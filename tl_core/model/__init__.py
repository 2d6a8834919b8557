"""The model wing: the backbone registry, heads, freezing, optimisers, preprocessing, features."""
