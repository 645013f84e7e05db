"""`python -m cnn_internals.explain`, the command users know; the code is cnn_internals.viz.explain."""

from cnn_internals.viz.explain import main

if __name__ == "__main__":
    main()
