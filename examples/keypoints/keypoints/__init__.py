"""A user's own task for runner: find the centre and radius of a bright disc on a noisy image."""
