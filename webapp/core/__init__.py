"""The rules, with no HTTP: conversations, turns, roles, accounts, limits, search, sharing, export/import, titles, versions."""
