"""Notifications: rendered messages, channels that deliver them, the outbox that retries."""
