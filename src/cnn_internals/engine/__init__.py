"""What works on any nn.Module: forward-to-a-layer and hooks, the projection engine, top-k
mining, receptive fields traced from the graph. Imports nothing else of the project: LeNet-5's
scaled tanh lives here (activations.py), with its projection rule beside torch's ReLU.
"""
