"""Models of the example bundle (import path ``models.sir``)."""
