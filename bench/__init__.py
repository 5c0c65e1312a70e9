"""QuantMesh benchmarks: ``python -m bench`` runs them all and prints one table.

They are measurements, not tests: every figure is printed next to a baseline measured in
the same run (the machine is noisy; ratios mean more than absolute times).
"""
