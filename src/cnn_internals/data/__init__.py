"""Datasets: downloads (mirrors, md5, retry, atomic) and the readers of their formats."""
