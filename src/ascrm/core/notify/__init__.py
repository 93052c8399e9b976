"""Notifications: what a call's outcome tells the CRM, kept in an outbox and delivered off the request path."""
