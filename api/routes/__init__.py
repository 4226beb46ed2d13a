"""Routers per area: prediction, shift, health/model information."""
