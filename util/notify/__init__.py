"""Notify utility: e-mails the user when an annotation job completes or fails."""
