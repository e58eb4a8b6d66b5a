"""Uptime and SLA reports for auditors: composed from the store, rendered as HTML, CSV, JSON."""
