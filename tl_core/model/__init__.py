"""The model wing: the backbone registry and its adapters, weights, heads, freezing, optimisers,
preprocessing, features."""
