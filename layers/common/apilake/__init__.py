"""apilake runtime library: what the planner and worker Lambdas run (shipped in the common layer)."""

__version__ = "0.1.0"
# What every request of apilake's says it is (the vendor's API and an OAuth2 token endpoint alike).
USER_AGENT = "apilake/0.1 (+https://github.com/apilake)"
