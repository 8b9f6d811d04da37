"""What every layer shares and imports nothing else of the app: plain records, domain errors, ids, the zh/en catalog, metrics, child processes."""
