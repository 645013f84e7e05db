"""What training and the other torch stages share about where they run: the CPU pin (imported
first, before torch computes), device choice, determinism, host memory, torchrun and its
process group.
"""
