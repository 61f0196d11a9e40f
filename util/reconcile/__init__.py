"""Reconcile: the periodic anti-entropy pass over jobs, results and archives."""
