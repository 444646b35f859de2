"""earthcast: experiment runner for deep-learning Earth-system forecasting."""
__version__ = "0.1.0"
