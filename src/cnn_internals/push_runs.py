"""`python -m cnn_internals.push_runs`, the command users know; the code is cnn_internals.pipeline.push_runs."""

from cnn_internals.pipeline.push_runs import main

if __name__ == "__main__":
    main()
