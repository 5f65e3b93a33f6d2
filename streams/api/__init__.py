"""`billing api`: the HTTP front door (ingest charges, read usage) for clients without Kafka."""
