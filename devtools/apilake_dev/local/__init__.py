"""Local stand-ins for AWS and Lambda: moto, the SQS event source, worker containers, the local run."""
