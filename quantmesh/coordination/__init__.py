"""Instance coordination: who trades which symbol when several instances run.

``allocation`` (pure) decides which symbols an instance wants from the live members;
``fleet`` keeps the membership heartbeats and the ownership records in Redis;
``coordinator`` runs one trader per symbol this instance holds the ownership lease of.
"""
