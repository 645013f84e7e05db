"""The foundation every layer may use: user errors, atomic writes, reading params.yaml, the
project root and output restore. Imports nothing of the other packages.
"""
