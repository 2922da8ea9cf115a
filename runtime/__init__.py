"""Shared runtime of the ticketing services: config, server, errors, db, broker."""
