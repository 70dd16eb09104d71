"""The `apilake` command line: operator commands (runtime package and boto3 only) and dev commands."""
