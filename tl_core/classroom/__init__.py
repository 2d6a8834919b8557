"""The classroom wing: a teacher's shared datasets and the class's runs, and the cleanup."""
