"""What long jobs (training, encoding, evaluation) share: the progress bar and stop signals."""
