"""What people look at: the PNG grids (render), the HTML report, explain for a user's photos,
and dvc plots as PNG.
"""
