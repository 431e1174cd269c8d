"""A run: specs validated, swept into variants, each variant run by its experiment kind, the
environment recorded."""
