"""The training loop and what it needs: distributed setup, loss, schedule, checkpoints."""
