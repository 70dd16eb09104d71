"""apilake runtime library: what the planner and worker Lambdas run (shipped in the common layer)."""

__version__ = "0.1.0"
