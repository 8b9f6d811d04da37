"""Redis: every key name (keys.py), the clients, the store modules that own the commands, migrations and start-up checks. No policy, no HTTP."""
