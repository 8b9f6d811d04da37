"""A turn's life: its writer (start, generate, save), its readers, the page channels, the followers across workers, leases and recovery."""
