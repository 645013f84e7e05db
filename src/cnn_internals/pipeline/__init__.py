"""What the stage scripts share: their command line and error wrapper, each artifact's path
and its reader, the checks of the params a stage reads, and pushing experiment runs.
"""
