"""The training/unlearning loops, stopping rules, checkpoints and run workflows."""
