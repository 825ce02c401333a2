"""Training: losses, learning-rate schedules, energy-bias fitting, loops and fine-tuning."""
