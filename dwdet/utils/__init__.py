"""Small helpers shared by the models, losses and engine."""
