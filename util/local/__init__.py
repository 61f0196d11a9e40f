"""``python -m util.local``: the local stack's command line, where the documentation names it.

The local stack itself (moto and its emulations, the faults proxy, the simulated annotator, the
demo) is no part of what a utility host runs: it lives in ``localaws/``, imported only when the
command runs.
"""
