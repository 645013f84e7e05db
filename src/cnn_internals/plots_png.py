"""`python -m cnn_internals.plots_png`, the command users know; the code is cnn_internals.viz.plots_png."""

from cnn_internals.viz.plots_png import main

if __name__ == "__main__":
    main()
