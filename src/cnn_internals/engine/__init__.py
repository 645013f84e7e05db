"""What works on any nn.Module: forward-to-a-layer and hooks, the projection engine, top-k
mining, receptive fields traced from the graph. Imports nothing else of the project: LeNet-5's
scaled tanh lives here (activations.py), with its projection rule beside torch's ReLU.
"""

# The name under which a model's own scores are mined and shown beside its layers (no layer may
# take it). Here, not in mining.py, so the registry can refuse it without every stage that
# imports a net depending on the mining code.
CLASSES = "classes"
