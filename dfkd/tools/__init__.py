"""The user's tools over a results tree: audit, show, compare, training curves, publish."""
