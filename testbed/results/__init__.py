"""Results: the saved documents, the pre-copy model, report.md and the plots. Reads results,
never the lab."""
