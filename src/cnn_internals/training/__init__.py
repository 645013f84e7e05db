"""Training: the recipe (train.<net>'s common keys) and the loop with its checkpoints.
"""
